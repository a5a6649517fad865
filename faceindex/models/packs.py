"""The registry of model packs: the built-in `dlib` and `yunet-omz95`, and packs added to a data folder.

Nothing loads at import time: the registry is built on first use, and a pack's models load when its runtime
first needs them.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ..errors import ModelError
from .base import ARCFACE_112, Alignment, InputSpec, ModelPack, PackFile, scaled_template

DEFAULT = "yunet-omz95"  # the pack of a new index (dlib: the model of faceindex 0.1)
PACKS_DIR = "packs"  # user packs live in <data>/packs/<name>/ (see models/userpack.py)
FILES = Path(__file__).resolve().parent / "files"

# sha256 of dlib's weight files as installed by face_recognition_models 0.3.0
_DLIB_SHA256 = {
    "dlib_face_recognition_resnet_model_v1.dat": "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    "mmod_human_face_detector.dat": "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
    "shape_predictor_5_face_landmarks.dat": "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
}
YUNET_FILE = FILES / "yunet" / "face_detection_yunet_2023mar.onnx"
OMZ_DIR = FILES / "omz-face-reidentification-retail-0095"
OMZ_XML = OMZ_DIR / "face-reidentification-retail-0095.xml"
OMZ_BIN = OMZ_DIR / "face-reidentification-retail-0095.bin"


def _dlib_pack() -> ModelPack:
    from . import dlib

    try:
        wdir = dlib.weights_dir()
    except ModelError:
        wdir = Path("<face_recognition_models not installed>")
    roles = {"dlib_face_recognition_resnet_model_v1.dat": "embedder", "mmod_human_face_detector.dat": "detector",
             "shape_predictor_5_face_landmarks.dat": "landmarker"}
    return ModelPack(
        name="dlib", version="1", dim=128, embedding_name="dlib_resnet_v1",
        detector="dlib HOG + linear SVM (CNN MMOD as fallback or with --detector cnn)",
        landmarks="dlib 5-point shape predictor",
        alignment=Alignment("dlib", dlib.CHIP_SIZE, padding=dlib.CHIP_PADDING),
        input=InputSpec(dlib.CHIP_SIZE, "RGB", "NHWC"),
        calibration="dlib_resnet_v1",
        licence="dlib: Boost Software License 1.0; models: public domain (CC0, Davis King), packaged by "
                "face_recognition_models (MIT)",
        origin="dlib.net via the face_recognition_models package",
        description="dlib's ResNet-34-like metric network, 128-d (the model of faceindex before 0.2)",
        files=tuple(PackFile(roles[n], wdir / n, h) for n, h in _DLIB_SHA256.items()),
        factory=dlib.build_dlib,
    )


def _yunet_omz_pack() -> ModelPack:
    from . import yunet_omz

    return ModelPack(
        name="yunet-omz95", version="1", dim=256,
        detector="YuNet 2023mar (ONNX; dlib CNN as fallback for probes)",
        landmarks="YuNet's 5 points (eyes, nose tip, mouth corners)",
        alignment=Alignment("similarity", 128, scaled_template(ARCFACE_112, 112, 128)),
        input=InputSpec(128, "BGR", "NCHW"),  # raw 0-255; the normalisation is inside the graph
        calibration="yunet-omz95",
        licence="YuNet: MIT (Shiqi Yu, OpenCV Zoo); face-reidentification-retail-0095: Apache-2.0 (Intel)",
        origin="OpenCV Zoo face_detection_yunet_2023mar; Intel Open Model Zoo 2022.1 face-reidentification-retail-0095",
        description="YuNet detector + ArcFace-template alignment at 128 px + Intel's MobileNetV2-like 256-d embedder",
        files=(
            PackFile("detector", YUNET_FILE, "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"),
            PackFile("embedder", OMZ_XML, "879662c555c826e7a07683f95bb4387b810ab679a8b8c64cc46e07016bb3da2b"),
            PackFile("embedder", OMZ_BIN, "4d8cdfa9447ddd6d8b447f76c6eaaa2c9345c1ee0146b94900ee5267ffcb9307"),
            PackFile("licence", FILES / "yunet" / "LICENSE",
                     "c83b8120c50ccbd4c4f96edf53141bdd566ebb8f8e9227e415326aa1b1aba958"),
            PackFile("licence", OMZ_DIR / "LICENSE",
                     "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4"),
        ),
        factory=yunet_omz.build_yunet_omz,
    )


@functools.cache
def builtin() -> dict[str, ModelPack]:
    """The packs shipped with faceindex, by name."""
    return {p.name: p for p in (_dlib_pack(), _yunet_omz_pack())}


def user_packs(data: Path | None) -> dict[str, ModelPack]:
    """Packs added to the data folder with `faceindex models add`, by name."""
    if data is None or not (data / PACKS_DIR).is_dir():
        return {}
    from .userpack import load_pack

    return {p.name: p for p in (load_pack(d) for d in sorted((data / PACKS_DIR).iterdir()) if d.is_dir())}


def available(data: Path | None = None) -> dict[str, ModelPack]:
    """Every pack usable with the data folder `data`: built-in first, then the folder's own."""
    return {**builtin(), **user_packs(data)}


def get(name: str, data: Path | None = None) -> ModelPack:
    """The pack called `name`; ModelError naming the known ones otherwise."""
    found = available(data)
    if name not in found:
        raise ModelError(f"unknown model pack {name!r} (known: {', '.join(found)})")
    return found[name]


def by_key(key: str, data: Path | None = None) -> ModelPack:
    """The pack whose embeddings carry `key` (as recorded in an index's catalog)."""
    for p in available(data).values():
        if p.key == key:
            return p
    raise ModelError(f"this index holds embeddings of model {key}, which no installed model pack makes "
                     "(faceindex models list)")


def for_index(settings, recorded_key: str | None) -> ModelPack:
    """The pack of an index: the one its catalog records, else `settings.model` (a new index), else DEFAULT.

    Asking for another model than the one an index holds is refused: one model per index, never mixed.
    """
    data = settings.resolved_data()
    if recorded_key is None:
        return get(settings.model or DEFAULT, data)
    pack = by_key(recorded_key, data)
    if settings.model is not None and settings.model != pack.name:
        raise ModelError(f"this index holds embeddings of model {pack.name} ({recorded_key}); refusing to mix in "
                         f"{settings.model}. Use another data folder, or faceindex reindex --model {settings.model}")
    return pack


def calibration_for(pack: ModelPack, data: Path, strong_fmr: float = 1e-5, possible_fmr: float = 1e-3):
    """The pack's calibration: the operator's own `data/calibration.json` when it was measured with this pack's
    model (faceindex evaluate --write-calibration), else the pack's shipped table."""
    from .. import calibration

    own = data / "calibration.json"
    if own.is_file():
        cal = calibration.load(pack.calibration, own, strong_fmr, possible_fmr)
        if cal.model == pack.key:
            return cal
    return calibration.load(pack.calibration, pack.calibration_path, strong_fmr, possible_fmr)
