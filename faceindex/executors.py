"""Executors: what turns a list of image files into analysis results for `ingest.add`.

`ingest.add` lists the files, skips the unchanged ones, and commits results in batches (catalog, vector index,
opt-out check, audit record); how the files are analysed is the executor's business:

- `LocalPool`: this machine's cores, through `pipeline.analyse_files` (worker processes, see `workers.py`);
- `ray_executor.RayExecutor`: Ray worker actors on a cluster (imported only when chosen: without `--ray`, nothing
  imports Ray).

Both yield one `ImageResult` or `FileFailure` per file, in completion order, and never raise for a bad file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .config import Settings
    from .pipeline import FacePipeline, FileFailure, ImageResult


class Executor(Protocol):
    """Analyses files; one result per path, in completion order; a bad file is a FileFailure, never an exception."""

    def analyse(self, paths: Sequence[str]) -> Iterator[ImageResult | FileFailure]:
        """Analyse `paths`, yielding a result for each as it completes."""
        ...

    def close(self) -> None:
        """Release what the executor holds (worker processes end with each `analyse` already)."""
        ...


class LocalPool:
    """Worker processes on this machine (in-process with one worker)."""

    def __init__(self, settings: Settings, workers: int, pipeline: FacePipeline | None = None) -> None:
        self.settings, self.workers, self.pipeline = settings, max(1, workers), pipeline

    def analyse(self, paths: Sequence[str]) -> Iterator[ImageResult | FileFailure]:
        from .pipeline import analyse_files

        yield from analyse_files(paths, self.settings, self.workers, self.pipeline)

    def close(self) -> None:
        pass


def make_executor(settings: Settings, *, workers: int, ray: str | None, pipeline: FacePipeline | None,
                  within: list[str] | None, expect_model: str) -> Executor:
    """The executor for one `add`: Ray when `ray` names a cluster ("auto" or HOST:PORT), else the local pool.

    `within` (real paths of the allowed ingest roots, server-side ingest) is enforced where a file is opened;
    `expect_model` is the index's model key, which every remote worker must reproduce.
    """
    if ray:
        from .ray_executor import RayExecutor

        return RayExecutor(ray, settings, within=within, expect_model=expect_model)
    return LocalPool(settings, workers, pipeline)
