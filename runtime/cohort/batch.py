"""``run_batch``: segment a cohort into ``DIR`` with the local or the Ray engine, then write its tables.

Order of work: check the output folder (created if missing; never a scan's own folder), take the
folder's lock, ``store.recover`` what an interrupted batch left, run the engine (each scan: skip if
complete, else segment and publish ``DIR/<id>/``), recover again, write ``cohort.csv``,
``cohort.parquet`` (pyarrow), ``scans.csv`` and ``summary.json``. An interrupt
(KeyboardInterrupt; the CLI turns SIGTERM into one) stops the engine, recovers, writes no cohort
tables and propagates: only complete scan folders remain and a rerun finishes the rest.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from limbseg_rt.runtime.cohort import store, tables
from limbseg_rt.runtime.cohort.jobs import ManifestError, ScanJob
from limbseg_rt.runtime.cohort.worker import STATUS_EMPTY, STATUS_FAILED, STATUS_OK, STATUS_SKIPPED, WorkerConfig
from limbseg_rt.runtime.errors import EXIT_OK, EXIT_SCANS_FAILED, OutputError
from limbseg_rt.runtime.report.run_report import runtime_versions

ENGINES = ("local", "ray")
Progress = Callable[[int, int, dict], None]


@dataclass
class BatchResult:
    """What a batch did. ``outcomes``: per scan id, the worker's outcome dict (see ``worker``);
    ``exit_code``: 0, or ``EXIT_SCANS_FAILED`` when at least one scan failed."""

    out_dir: Path
    outcomes: dict[str, dict]
    summary: dict
    written: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [o for o in self.outcomes.values() if o["status"] == STATUS_FAILED]

    @property
    def exit_code(self) -> int:
        return EXIT_SCANS_FAILED if self.failed else EXIT_OK


MAX_DEFAULT_WORKERS = 4


def default_workers(cpus: int | None = None) -> int:
    """Local workers when not asked: one per core up to 4 (then the cores are shared as threads).

    Small scans spend much of their time outside the model (reading, resizing, writing), which
    a second process overlaps better than a second thread (2 cores, 20 small phantoms, bundled UNet:
    5.4 s with 2 workers x 1 thread, 6.7 s with 1 x 2); beyond 4, memory (one scan per worker)
    grows faster than speed.
    """
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_WORKERS, cpus))


def split_threads(total: int | None, workers: int) -> int:
    """ONNX Runtime threads per local worker: ``total`` (default: all cores) shared evenly, at least 1."""
    total = total or os.cpu_count() or 1
    return max(1, total // workers)


def check_out_dir(out_dir: Path, jobs: list[ScanJob]) -> Path:
    """The output folder, created if needed; refuses a file, a reserved id, or a scan inside a scan folder."""
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} is a file; give a folder for the cohort's outputs")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the output folder {out_dir} ({exc.strerror or exc}); choose another --out"
        ) from None
    root = out_dir.resolve()
    reserved = {Path(n).stem for n in store.COHORT_FILES} | set(store.COHORT_FILES)
    for job in jobs:
        if job.id in reserved:
            raise OutputError(f"scan id {job.id!r} is the name of a cohort output in {out_dir}; rename the scan")
        src = Path(job.source).expanduser().resolve()
        folder = root / job.id
        if src == folder or folder in src.parents:
            raise OutputError(
                f"scan {job.source} lies inside its own output folder {folder}, which a rerun replaces; "
                "move the scan or choose another --out"
            )
    return out_dir


def run_batch(
    jobs: list[ScanJob],
    out_dir: str | os.PathLike,
    *,
    segmenter_kwargs: dict | None = None,
    read_options=None,
    engine: str = "local",
    workers: int | None = None,
    force: bool = False,
    ray_address: str | None = None,
    gpus_per_worker: float | None = None,
    progress: Progress | None = None,
    analysis: dict | None = None,
    split_sides: bool = False,
    seg_type: str = "binary",
) -> BatchResult:
    """Segment ``jobs`` into ``out_dir`` (see module docstring). Never prints.

    ``segmenter_kwargs``: ``Segmenter`` keyword arguments; for the local engine ``threads`` is the
    total shared by the workers (default all cores), for Ray the threads of each actor (default 1).
    ``workers``: local processes (default ``default_workers()``, at most ``threads``) or Ray actors (default: as many as
    the cluster's CPUs, or GPUs for a GPU provider, allow). ``progress(done, total, outcome)`` after
    each scan. ``analysis``: None or ``{"clean": bool, "ff_erode": int}``, the per muscle x side
    analysis of ``run --analysis`` for every scan (each job's Dixon paths added); ``split_sides``
    (needs ``analysis``) and ``seg_type`` (DICOM inputs' SEG) as in ``run``. Raises ``OutputError`` (folder unusable or locked), the first worker's model or
    provider error, ``ClusterError`` (Ray), or ``KeyboardInterrupt``.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    kwargs = dict(segmenter_kwargs or {})
    if split_sides and analysis is None:
        raise ValueError("split_sides needs analysis")
    if analysis is None and any(j.dixon for j in jobs):
        raise ManifestError(
            "the manifest gives Dixon images (dixon_fat, dixon_water, fat_fraction); add --analysis to use them"
        )
    if analysis is not None and analysis.get("clean", True):  # fail before segmenting, as run does
        from limbseg_rt.runtime.analysis.cleanup import check_available

        check_available()
    out_dir = check_out_dir(Path(out_dir), jobs)
    outcomes: dict[str, dict] = {}
    t0 = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    def on_outcome(outcome: dict) -> None:
        outcomes[outcome["id"]] = outcome
        if progress is not None:
            progress(len(outcomes), len(jobs), outcome)

    with store.BatchLock(out_dir):
        recovered = store.recover(out_dir)
        try:
            if engine == "local":
                from limbseg_rt.runtime.cohort.local import LocalPool

                if workers is None:  # never more workers than the threads asked for
                    workers = min(default_workers(), kwargs.get("threads") or default_workers())
                n = max(1, min(workers, len(jobs)))
                kwargs["threads"] = split_threads(kwargs.get("threads"), n)
                config = WorkerConfig(
                    str(out_dir.resolve()), kwargs, read_options, force, analysis, split_sides, seg_type
                )
                info = LocalPool(config, workers=n).run(jobs, on_outcome)
            else:
                from limbseg_rt.runtime.cohort.ray_engine import run_ray

                kwargs["threads"] = kwargs.get("threads") or 1
                gpus = (
                    gpus_per_worker
                    if gpus_per_worker is not None
                    else (1.0 if kwargs.get("provider") in ("cuda", "tensorrt") else 0.0)
                )
                config = WorkerConfig(
                    str(out_dir.resolve()), kwargs, read_options, force, analysis, split_sides, seg_type
                )
                info = run_ray(
                    jobs,
                    config,
                    on_outcome,
                    workers=workers,
                    address=ray_address,
                    cpus_per_worker=float(kwargs["threads"]),
                    gpus_per_worker=gpus,
                )
        finally:
            store.recover(out_dir)  # after the engine stopped: nothing is writing any more
        wall = time.perf_counter() - t0
        summary = _summary(jobs, outcomes, info, kwargs, read_options, force, wall, started, recovered)
        summary["settings"].update(analysis=analysis, split_sides=split_sides, seg_type=seg_type)
        result = BatchResult(out_dir, outcomes, summary)
        csv_path = tables.write_cohort_csv(out_dir, jobs, outcomes)
        result.written.append(csv_path)
        parquet = tables.write_parquet(csv_path)
        if parquet is not None:
            result.written.append(parquet)
        result.written.append(tables.write_scans_csv(out_dir, jobs, outcomes))
        summary["outputs"] = [p.name for p in result.written] + ["summary.json"]
        summary["exit_code"] = result.exit_code
        result.written.append(tables.write_summary(out_dir, summary))
    return result


def _summary(jobs, outcomes, info, kwargs, read_options, force, wall, started, recovered) -> dict:
    status = [outcomes[j.id]["status"] for j in jobs]
    segmented = [outcomes[j.id] for j in jobs if outcomes[j.id]["status"] in (STATUS_OK, STATUS_EMPTY)]
    failed = [outcomes[j.id] for j in jobs if outcomes[j.id]["status"] == STATUS_FAILED]
    reused = [outcomes[j.id] for j in jobs if outcomes[j.id]["status"] == STATUS_SKIPPED]
    slices = sum(o.get("slices") or 0 for o in segmented)
    versions = runtime_versions()
    if info.get("ray_version"):
        versions["ray"] = info["ray_version"]
    ro = read_options
    return {
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "counts": {
            "scans": len(jobs),
            "segmented": len(segmented),
            "reused": len(reused),
            "failed": len(failed),
            "ok": status.count(STATUS_OK) + sum(1 for o in reused if o["exit_code"] == EXIT_OK),
            "empty": status.count(STATUS_EMPTY) + sum(1 for o in reused if o["exit_code"] != EXIT_OK),
        },
        "failures": [
            {"id": o["id"], "source": o["source"], "exit_code": o["exit_code"], "message": o["message"]} for o in failed
        ],
        "throughput": {
            "wall_s": wall,
            "scans_segmented": len(segmented),
            "scans_per_hour": len(segmented) / wall * 3600.0 if wall > 0 else None,
            "slices_per_s": slices / wall if wall > 0 else None,
            "note": "scans segmented in this run over the batch's wall time (model loads included); reused scans not counted",
        },
        "memory": {
            "max_worker_peak_rss_mib": max(
                (o["peak_rss_mib"] for o in segmented if o.get("peak_rss_mib")), default=None
            ),
            "note": "peak resident memory of the busiest worker process (VmHWM); the batch holds at most "
            "workers x (one scan in inference + one being written)",
        },
        "engine": info,
        "settings": {
            "segmenter": kwargs,
            "force": force,
            "read_options": None
            if ro is None
            else {k: getattr(ro, k) for k in ("volume_index", "allow_2d", "prefer", "assume_orientation")},
        },
        "recovered_at_start": recovered,
        "versions": versions,
    }
