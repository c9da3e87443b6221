"""One scan of a cohort, start to finish, the same for every engine: check, segment, publish.

``prepare`` hashes the input and reads the scan's completion record: a scan whose input bytes,
model file (SHA-256) and output-affecting settings match its record is skipped (unless ``force``).
``segment`` runs the worker's ``Segmenter``. ``publish_result`` writes the outputs with
``SegmentationResult.save`` into a staging folder, adds the completion record and renames the
folder into place (``store``). Every failure becomes the scan's outcome (exit code and one-line
message, as ``limbseg-rt run`` would print); only an interrupt stops the worker.

An outcome is a plain dict (it crosses process and Ray boundaries): ``id``, ``source``, ``status``
(``ok``, ``empty``, ``skipped``, ``failed``), ``exit_code``, ``message``, ``error_type``,
``input_sha256``, ``seconds`` (wall time of this scan in this worker), ``slices``, ``timings_s``
(read/preprocess/infer/postprocess/write from the report), ``worker`` (pid) and, for a segmented
scan, ``peak_rss_mib`` (the worker process's peak resident memory when the scan was saved).

``ScanPipeline`` is the local engine's worker loop: a reader thread prepares the next scan (hashing
reads the whole file, so it is then in the page cache) while the main thread segments the current
one and a writer thread saves the previous one. Queues of one item bound the memory to one scan in
inference plus one result being written.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from limbseg_rt.runtime.cohort import store
from limbseg_rt.runtime.cohort.jobs import ScanJob, input_kind, input_sha256
from limbseg_rt.runtime.errors import EXIT_EMPTY, EXIT_INPUT, EXIT_INTERNAL, EXIT_OK, EXIT_OUTPUT, LimbsegError

STATUS_OK, STATUS_EMPTY, STATUS_SKIPPED, STATUS_FAILED = "ok", "empty", "skipped", "failed"


@dataclass(frozen=True)
class WorkerConfig:
    """What every worker needs (picklable). ``segmenter_kwargs``: ``Segmenter`` keyword arguments
    (threads already split per worker); ``read_options``: a ``ReadOptions`` or None.
    ``analysis``: None (no analysis) or ``{"clean": bool, "ff_erode": int}`` (``run --analysis
    [--no-cleanup] [--ff-erode N]``; each job adds its own Dixon paths); ``split_sides``: the label map
    with a right and a left label per muscle; ``seg_type``: ``"binary"`` or ``"labelmap"``, the DICOM
    SEG written for a DICOM input."""

    out_dir: str
    segmenter_kwargs: dict = field(default_factory=dict)
    read_options: object = None
    force: bool = False
    analysis: dict | None = None
    split_sides: bool = False
    seg_type: str = "binary"


@dataclass
class Prepared:
    job: ScanJob
    kind: str
    sha256: str
    t0: float


def output_settings(config: WorkerConfig, job: ScanJob) -> dict:
    """The settings that change a scan's outputs; a record whose settings differ is redone.

    The model file itself is compared by SHA-256 (so ``--precision`` is covered by the file it picks);
    provider, threads, batch size, workers and engine change speed only and are recorded, not compared.
    """
    kw = config.segmenter_kwargs
    ro = config.read_options
    read = (
        {k: getattr(ro, k) for k in ("volume_index", "allow_2d", "prefer", "assume_orientation")}
        if ro is not None
        else None
    )
    settings = {
        "fit": kw.get("fit", "auto"),
        "tile_overlap": kw.get("tile_overlap", 0.5),
        "limb_range": list(job.limb_range) if job.limb_range else None,
        "read_options": read,
    }
    # Issue 22: the analysis options are output settings too. Keys are added only when set, so the
    # records of batches without them still match. Dixon inputs count by content (SHA-256).
    if config.analysis is not None:
        settings["analysis"] = {
            "clean": bool(config.analysis.get("clean", True)),
            "ff_erode": int(config.analysis.get("ff_erode", 0)),
            "split_sides": bool(config.split_sides),
            "dixon": {c: _file_sha256(p) for c, p in job.dixon.items()},
        }
    if config.seg_type != "binary":
        settings["seg_type"] = config.seg_type
    return settings


def _file_sha256(path: str) -> str:
    """SHA-256 of a Dixon input, or ``missing:<path>`` (the scan then fails when it is segmented)."""
    from limbseg_rt.runtime.hashing import sha256_file

    try:
        return sha256_file(path)
    except OSError:
        return f"missing:{path}"


def analysis_options(config: WorkerConfig, job: ScanJob):
    """The ``AnalysisOptions`` of one scan (the batch's options plus its Dixon paths), or None."""
    if config.analysis is None:
        return None
    from limbseg_rt.runtime.analysis.measures import AnalysisOptions

    d = job.dixon
    return AnalysisOptions(
        clean=bool(config.analysis.get("clean", True)),
        ff_erode=int(config.analysis.get("ff_erode", 0)),
        fat=d.get("dixon_fat"),
        water=d.get("dixon_water"),
        fat_fraction=d.get("fat_fraction"),
    )


def failure(job: ScanJob, exc: BaseException, *, t0: float | None = None, sha: str | None = None) -> dict:
    """The outcome of a scan that failed with ``exc`` (exit code and message as ``run`` would give)."""
    if isinstance(exc, LimbsegError):
        code, msg = exc.exit_code, (str(exc).splitlines() or [type(exc).__name__])[0]
    elif isinstance(exc, MemoryError):
        code, msg = (
            EXIT_INTERNAL,
            "out of memory while segmenting this scan; use fewer --workers or a smaller --batch-size",
        )
    elif isinstance(exc, OSError):
        code, msg = (
            EXIT_OUTPUT,
            f"cannot write the outputs ({exc.strerror or exc}); check the folder's free space and permissions",
        )
    else:
        first = (str(exc).splitlines() or [""])[0]
        code, msg = (
            EXIT_INTERNAL,
            f"internal error ({type(exc).__name__}: {first}); rerun this scan with limbseg-rt run --debug and report it",
        )
    return make_outcome(job, STATUS_FAILED, code, msg, error_type=type(exc).__name__, sha=sha, t0=t0)


def make_outcome(
    job: ScanJob,
    status: str,
    code: int,
    message: str = "",
    *,
    error_type: str = "",
    sha: str | None = None,
    t0: float | None = None,
    slices: int | None = None,
    timings: dict | None = None,
) -> dict:
    return {
        "id": job.id,
        "source": job.source,
        "status": status,
        "exit_code": int(code),
        "message": message,
        "error_type": error_type,
        "input_sha256": sha or "",
        "seconds": time.perf_counter() - t0 if t0 is not None else 0.0,
        "slices": slices,
        "timings_s": timings or {},
        "worker": os.getpid(),
    }


def remote_error(type_name: str, code: int, message: str) -> LimbsegError:
    """The error a worker reported (by class name, exit code and message), rebuilt in this process."""
    from limbseg_rt.runtime import errors

    cls = getattr(errors, type_name, None)
    if isinstance(cls, type) and issubclass(cls, LimbsegError) and getattr(cls, "exit_code", None) == code:
        try:
            return cls(message)
        except TypeError:
            pass
    exc = LimbsegError(message)
    exc.exit_code = int(code)
    return exc


def prepare(job: ScanJob, config: WorkerConfig, model_sha256: str) -> Prepared | dict:
    """A ``Prepared`` scan to segment, or its outcome (``skipped`` when complete, ``failed`` when unreadable)."""
    t0 = time.perf_counter()
    kind = input_kind(job.source)
    if kind == "missing":
        return make_outcome(
            job, STATUS_FAILED, EXIT_INPUT, f"input not found: {job.source}", error_type="InputError", t0=t0
        )
    try:
        sha = input_sha256(job.source)
    except OSError as exc:
        return make_outcome(
            job,
            STATUS_FAILED,
            EXIT_INPUT,
            f"{job.source}: cannot be read ({exc.strerror or exc})",
            error_type="InputError",
            t0=t0,
        )
    if not config.force:
        record = store.read_record(Path(config.out_dir), job.id)
        if store.record_matches(
            record, input_sha256=sha, model_sha256=model_sha256, settings=output_settings(config, job)
        ):
            return make_outcome(
                job, STATUS_SKIPPED, record.get("exit_code", EXIT_OK), "complete from an earlier run", sha=sha, t0=t0
            )
    return Prepared(job, kind, sha, t0)


def segment(seg, prepared: Prepared, config: WorkerConfig):
    """Run the model on one prepared scan (``SegmentationResult``); exceptions propagate."""
    return seg.segment(
        prepared.job.source,
        limb_range=prepared.job.limb_range,
        read_options=config.read_options,
        analysis=analysis_options(config, prepared.job),
    )


def publish_result(seg, prepared: Prepared, result, config: WorkerConfig) -> dict:
    """Write outputs + completion record into a staging folder, rename it to ``DIR/<id>/``; the outcome."""
    job, root = prepared.job, Path(config.out_dir)
    staging = store.new_staging_dir(root, job.id)
    try:
        written = _write_outputs(result, prepared, staging, config)
        manifest = result.report.manifest
        status, code = (STATUS_EMPTY, EXIT_EMPTY) if result.empty else (STATUS_OK, EXIT_OK)
        timings = {k: manifest["timings_s"].get(k) for k in ("read", "preprocess", "infer", "postprocess", "write")}
        slices = int(manifest["input"]["geometry"]["canonical_shape"][2])
        store.write_record(
            staging,
            {
                "id": job.id,
                "status": status,
                "exit_code": code,
                "input": {"source": job.source, "kind": prepared.kind, "sha256": prepared.sha256},
                "model": {"sha256": seg.model_sha256, "file": seg.model_path.name},
                "settings": output_settings(config, job),
                "engine": {
                    "provider": seg.provider,
                    "precision": seg.precision,
                    "threads": config.segmenter_kwargs.get("threads"),
                    "batch_size": manifest["pipeline"]["batch_size"],
                },
                "outputs": {k: Path(p).name for k, p in written.items()},
                "slices": slices,
                "timings_s": timings,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        store.publish(staging, root, job.id)
    except BaseException:
        store.discard(staging)
        raise
    outcome = make_outcome(
        job,
        status,
        code,
        "image empty or constant: all-background labels written" if code else "",
        sha=prepared.sha256,
        t0=prepared.t0,
        slices=slices,
        timings=timings,
    )
    outcome["peak_rss_mib"] = manifest.get("peak_rss_mib")  # this worker's high-water mark so far
    return outcome


def _write_outputs(result, prepared: Prepared, staging: Path, config: WorkerConfig) -> dict:
    """The files ``run`` writes, into ``staging`` (one ``OutputSet``; report last): labels and label
    tables, volume CSV, the per muscle x side CSV with the analysis, the DICOM SEG for a DICOM input."""
    from limbseg_rt.runtime.api import declare_outputs
    from limbseg_rt.runtime.io.dicom import looks_like_dicom
    from limbseg_rt.runtime.io.outputs import OutputSet

    job = prepared.job
    names = store.output_names(job.id)
    with OutputSet(inputs=[job.source]) as out:
        declare_outputs(
            out,
            staging / names["labels"],
            staging / names["report"],
            staging / names["csv"],
            measures_csv=staging / names["measures_csv"] if result.report.analysis is not None else None,
        )
        dicom = looks_like_dicom(Path(job.source))
        if dicom:
            out.add("seg", staging / names["seg"], what="DICOM SEG")
        out.check()
        if dicom:
            if result.labels_canonical.any():  # staged before the report is written, so the report names it
                result.save_seg(out.temp("seg"), seg_type=config.seg_type, record_as=out.paths["seg"])
            else:
                out.drop("seg")
                result.report = result.report.with_warning(
                    "no muscle was found, so no DICOM SEG was written (a SEG needs a segment)"
                )
        return result.write_outputs(out, split_sides=config.split_sides)


def process_scan(seg, job: ScanJob, config: WorkerConfig) -> dict:
    """Prepare, segment and publish one scan in this thread; always returns its outcome."""
    p = prepare(job, config, seg.model_sha256)
    if isinstance(p, dict):
        return p
    try:
        return publish_result(seg, p, segment(seg, p, config), config)
    except Exception as exc:  # a bad scan never stops the cohort
        return failure(job, exc, t0=p.t0, sha=p.sha256)


_DONE = object()


class ScanPipeline:
    """Reader thread -> segment (calling thread) -> writer thread, one scan in each (see module doc).

    ``next_job()`` returns the next ``ScanJob`` or None when there is no more work; ``emit(outcome)``
    is called from any of the three threads once per scan. ``run`` returns when all work is done;
    on an interrupt (KeyboardInterrupt in the calling thread) it lets the writer finish the scan it
    is saving, drops the rest (nothing of theirs is on disk) and re-raises.
    """

    def __init__(self, seg, config: WorkerConfig, emit: Callable[[dict], None]):
        self.seg, self.config, self.emit = seg, config, emit
        self._stop = threading.Event()
        self._prepared: queue.Queue = queue.Queue(maxsize=1)
        self._to_write: queue.Queue = queue.Queue(maxsize=1)

    def _reader(self, next_job: Callable[[], ScanJob | None]) -> None:
        try:
            while not self._stop.is_set():
                job = next_job()
                if job is None:
                    break
                try:
                    p = prepare(job, self.config, self.seg.model_sha256)
                except Exception as exc:
                    p = failure(job, exc)
                if isinstance(p, dict):
                    self.emit(p)
                else:
                    self._put(self._prepared, p)
        finally:
            self._put(self._prepared, _DONE)

    def _writer(self) -> None:
        while True:
            item = self._to_write.get()
            if item is _DONE:
                return
            p, result = item
            if self._stop.is_set():
                continue  # interrupted: do not start another write
            try:
                outcome = publish_result(self.seg, p, result, self.config)
            except Exception as exc:
                outcome = failure(p.job, exc, t0=p.t0, sha=p.sha256)
            self.emit(outcome)

    def _put(self, q: queue.Queue, item) -> None:
        while True:  # a bounded put that gives up once stopped (the consumer may be gone)
            try:
                q.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._stop.is_set() and item is not _DONE:
                    return

    def run(self, next_job: Callable[[], ScanJob | None]) -> None:
        reader = threading.Thread(target=self._reader, args=(next_job,), name="cohort-reader", daemon=True)
        writer = threading.Thread(target=self._writer, name="cohort-writer", daemon=True)
        reader.start()
        writer.start()
        try:
            while True:
                p = self._prepared.get()
                if p is _DONE:
                    break
                try:
                    result = segment(self.seg, p, self.config)
                except Exception as exc:
                    self.emit(failure(p.job, exc, t0=p.t0, sha=p.sha256))
                    continue
                self._to_write.put((p, result))
                del result  # the writer holds the only reference: memory is freed after its save
        except BaseException:
            self._stop.set()
            self._drain_and_finish(writer)
            raise
        self._to_write.put(_DONE)
        writer.join()

    def _drain_and_finish(self, writer: threading.Thread) -> None:
        try:
            while True:
                self._to_write.get_nowait()
        except queue.Empty:
            pass
        try:
            self._to_write.put_nowait(_DONE)
        except queue.Full:
            pass
        writer.join(timeout=120)  # the scan being saved completes (or its staging folder is discarded)
