"""Similarity -> false-match rate, measured on labelled impostor pairs (LFW for the shipped table).

A score is shown with the share of different-person pairs that score at least as high (FMR), and a search with
the expected number of false candidates at that score in a gallery of N faces (FMR x N).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import ModelError

STRONG = "strong candidate"
POSSIBLE = "possible candidate"
NONE = "no candidate"


@dataclass(frozen=True)
class Calibration:
    """A monotone table of (similarity, FMR, FNMR) points."""

    model: str
    similarity: np.ndarray  # ascending
    fmr: np.ndarray  # non-increasing
    fnmr: np.ndarray  # non-decreasing
    impostor_pairs: int
    genuine_pairs: int
    source: str
    strong_fmr: float = 1e-5
    possible_fmr: float = 1e-3

    @property
    def fmr_floor(self) -> float:
        """The smallest FMR the table can resolve (one impostor pair)."""
        return 1.0 / max(1, self.impostor_pairs)

    def fmr_at(self, similarity: float | np.ndarray) -> np.ndarray | float:
        """Estimated FMR for a score (log-linear interpolation; clamped to the table's resolution)."""
        s = np.asarray(similarity, dtype=np.float64)
        logf = np.interp(s, self.similarity, np.log10(np.maximum(self.fmr, self.fmr_floor)))
        out = np.power(10.0, logf)
        return float(out) if out.ndim == 0 else out

    def fnmr_at(self, similarity: float) -> float:
        return float(np.interp(similarity, self.similarity, self.fnmr))

    def threshold_for(self, fmr: float) -> float:
        """The lowest similarity whose FMR is <= `fmr`."""
        ok = np.nonzero(self.fmr <= fmr)[0]
        return float(self.similarity[ok[0]]) if len(ok) else float(self.similarity[-1])

    def label(self, similarity: float) -> tuple[float, str]:
        """(FMR, decision label) for a score. Labels are leads, never identifications."""
        f = float(self.fmr_at(similarity))
        if f <= self.strong_fmr:
            return f, STRONG
        if f <= self.possible_fmr:
            return f, POSSIBLE
        return f, NONE

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "source": self.source,
            "impostor_pairs": self.impostor_pairs,
            "genuine_pairs": self.genuine_pairs,
            "table": [[round(float(s), 5), float(f), float(n)]
                      for s, f, n in zip(self.similarity, self.fmr, self.fnmr)],
        }

    @classmethod
    def from_json(cls, data: dict, strong_fmr: float = 1e-5, possible_fmr: float = 1e-3) -> Calibration:
        t = np.asarray(data["table"], dtype=np.float64)
        return cls(data["model"], t[:, 0], t[:, 1], t[:, 2], int(data["impostor_pairs"]),
                   int(data["genuine_pairs"]), data.get("source", ""), strong_fmr, possible_fmr)

    @classmethod
    def from_scores(cls, model: str, genuine: np.ndarray, impostor: np.ndarray, source: str,
                    points: int = 400) -> Calibration:
        """Build a table from genuine and impostor similarity samples."""
        imp = np.sort(np.asarray(impostor, np.float64))
        gen = np.sort(np.asarray(genuine, np.float64))
        lo = min(imp[0], gen[0]) if len(gen) else imp[0]
        hi = max(imp[-1], gen[-1]) if len(gen) else imp[-1]
        # dense where the decisions are made: the impostor tail
        qs = np.concatenate([np.linspace(lo, hi, points // 2),
                             imp[np.unique(np.clip(len(imp) - np.geomspace(1, len(imp), points // 2).astype(int),
                                                   0, len(imp) - 1))]])
        sims = np.unique(np.round(qs, 5))
        fmr = (len(imp) - np.searchsorted(imp, sims, side="left")) / len(imp)
        fnmr = np.searchsorted(gen, sims, side="left") / max(1, len(gen))
        fmr = np.minimum.accumulate(fmr)  # monotone despite rounding
        return cls(model, sims, fmr, fnmr, len(imp), len(gen), source)


def load(name: str, path: Path | None = None, strong_fmr: float = 1e-5, possible_fmr: float = 1e-3) -> Calibration:
    """The table at `path` (an operator's own), else the one shipped for model `name`."""
    try:
        if path is not None and path.is_file():
            data = json.loads(path.read_text())
        else:
            data = json.loads(resources.files("faceindex.calibration_tables").joinpath(f"{name}.json").read_text())
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"no usable calibration table for model {name}: {e}") from e
    return Calibration.from_json(data, strong_fmr, possible_fmr)
