"""The spool folder: every acknowledged instance, per-series state, results and the outbox, on disk.

Layout of ``SPOOL``::

    incoming/<SeriesInstanceUID>/<SOPInstanceUID>.dcm   received instances (Part 10 files)
    incoming/<SeriesInstanceUID>/series.json            per-series state (schema SERIES_SCHEMA)
    results/<key>/                                      one processed series: the files to send,
    results/<key>/result.json                           and its delivery state per destination
    failed/<SeriesInstanceUID>/                         series whose processing failed (+ error.json)
    status.json                                         the node's counters, rewritten every second

Every file is written to a temporary name in its final folder, flushed, ``fsync``-ed, renamed
into place, and the folder is ``fsync``-ed: after ``store_instance`` returns, the instance
survives a crash or power loss. A series' results appear in ``results/<key>/`` in one rename
(the commit point); only then is its ``incoming/`` folder removed. ``key`` is the SHA-256 of the
SeriesInstanceUID, the model's SHA-256 and the processing settings, so a series that is sent
again, or whose ``incoming/`` folder survived a crash after the commit, is never processed twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SERIES_SCHEMA = "limbseg-rt.serve-series/1"
RESULT_SCHEMA = "limbseg-rt.serve-result/1"
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")


class SpoolFull(Exception):
    """Storing this instance would take the spool past its quota."""


class SeriesChanged(Exception):
    """An instance of the series arrived while it was being processed (the result is not committed)."""


def valid_uid(uid: str) -> bool:
    """A DICOM UID: digits and dots, at most 64 characters (safe as a file name)."""
    return bool(uid) and len(uid) <= 64 and bool(_UID_RE.match(uid))


def series_key(series_uid: str, model_sha256: str, settings: dict) -> str:
    """Hex SHA-256 of the series UID, model hash and settings (sorted JSON): the dedup key."""
    blob = json.dumps({"series": series_uid, "model_sha256": model_sha256, "settings": settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` durably: temp file in the same folder, fsync, rename, fsync folder."""
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path: Path, obj: dict) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> dict | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _tree_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


@dataclass
class SeriesState:
    """What the spool knows about one series being received (``series.json``)."""

    series_uid: str
    study_uid: str
    instances: int
    first_received: float  # wall clock, seconds since the epoch
    last_received: float
    calling_ae: str

    def to_json(self) -> dict:
        return {"schema": SERIES_SCHEMA, **self.__dict__}


class Spool:
    """The spool folder (layout in the module docstring); thread-safe (one lock for all writers)."""

    def __init__(self, root: str | os.PathLike, quota_bytes: int):
        self.root = Path(root)
        self.quota_bytes = int(quota_bytes)
        self.incoming = self.root / "incoming"
        self.results = self.root / "results"
        self.failed = self.root / "failed"
        for d in (self.incoming, self.results, self.failed):
            d.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._cleanup_temp()
        self.used_bytes = _tree_bytes(self.root)

    def _cleanup_temp(self) -> None:
        """Remove temporary files and staging folders a killed node left (never acknowledged data)."""
        for folder in (self.incoming, self.results):
            for p in folder.glob(".*"):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        for series in self.incoming.iterdir():
            for p in series.glob(".*.tmp"):
                p.unlink(missing_ok=True)

    # ------------------------------------------------------------------ receiving
    def store_instance(
        self, series_uid: str, study_uid: str, sop_uid: str, data: bytes, calling_ae: str
    ) -> SeriesState:
        """Write one Part 10 file durably and update the series state; ``SpoolFull`` over the quota.

        A resent instance (same SOPInstanceUID) replaces the earlier file and restarts the series' clock.
        """
        with self._lock:
            folder = self.incoming / series_uid
            target = folder / f"{sop_uid}.dcm"
            old = target.stat().st_size if target.exists() else 0
            if self.used_bytes - old + len(data) + 4096 > self.quota_bytes:
                raise SpoolFull(f"spool {self.root} would exceed its quota of {self.quota_bytes} bytes")
            if not folder.exists():
                folder.mkdir()
                fsync_dir(self.incoming)
            write_atomic(target, data)
            now = time.time()
            state = self.series_state(series_uid)
            if state is None:
                state = SeriesState(series_uid, study_uid, 0, now, now, calling_ae)
            state.instances = sum(1 for _ in folder.glob("*.dcm"))
            state.last_received = now
            state_file = folder / "series.json"
            old_state = state_file.stat().st_size if state_file.exists() else 0
            write_json(state_file, state.to_json())
            self.used_bytes += len(data) - old + state_file.stat().st_size - old_state
            return state

    def series_state(self, series_uid: str) -> SeriesState | None:
        obj = read_json(self.incoming / series_uid / "series.json")
        if not obj or obj.get("schema") != SERIES_SCHEMA:
            return None
        obj.pop("schema")
        try:
            return SeriesState(**obj)
        except TypeError:
            return None

    def pending_series(self) -> list[SeriesState]:
        """Every series in ``incoming/`` (received, not yet committed), oldest last instance first.

        A folder with instances but no readable ``series.json`` (killed between the two writes) gets
        one rebuilt from its files' modification times.
        """
        out = []
        for folder in sorted(self.incoming.iterdir()):
            if not folder.is_dir() or not valid_uid(folder.name):
                continue
            state = self.series_state(folder.name)
            if state is None:
                files = list(folder.glob("*.dcm"))
                if not files:
                    continue
                mt = max(f.stat().st_mtime for f in files)
                state = SeriesState(folder.name, "", len(files), mt, mt, "")
            out.append(state)
        return sorted(out, key=lambda s: s.last_received)

    def series_files(self, series_uid: str) -> list[Path]:
        return sorted((self.incoming / series_uid).glob("*.dcm"))

    # ------------------------------------------------------------------ processing
    def staging_dir(self) -> Path:
        path = self.results / f".staging-{secrets.token_hex(6)}"
        path.mkdir()
        return path

    def is_done(self, key: str) -> bool:
        return (self.results / key / "result.json").is_file()

    def commit_result(
        self, key: str, staging: Path, record: dict, *, expect_last_received: float | None = None
    ) -> Path:
        """Publish a processed series: ``result.json`` into ``staging``, rename it to ``results/<key>``,
        then remove the series' ``incoming/`` folder, all under the spool lock.

        ``expect_last_received``: the series state's ``last_received`` when processing started; if an
        instance arrived since, nothing is committed (``SeriesChanged``) and the series stays to be
        processed again once it is stable, so no acknowledged instance is dropped unprocessed.
        """
        for p in staging.iterdir():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        write_json(staging / "result.json", {"schema": RESULT_SCHEMA, **record})
        final = self.results / key
        series_uid = record["series_uid"]
        with self._lock:
            if expect_last_received is not None:
                state = self.series_state(series_uid)
                if state is not None and state.last_received != expect_last_received:
                    raise SeriesChanged(series_uid)
            os.replace(staging, final)
            fsync_dir(self.results)
            self.used_bytes += _tree_bytes(final)
            self._drop_incoming_locked(series_uid)
        return final

    def drop_incoming(self, series_uid: str) -> None:
        with self._lock:
            self._drop_incoming_locked(series_uid)

    def _drop_incoming_locked(self, series_uid: str) -> None:
        folder = self.incoming / series_uid
        size = _tree_bytes(folder)
        shutil.rmtree(folder, ignore_errors=True)
        fsync_dir(self.incoming)
        self.used_bytes -= size

    def park_failed(self, series_uid: str, error: dict) -> Path:
        """Move a series whose processing failed to ``failed/<uid>/`` with ``error.json`` (kept for review)."""
        src, dst = self.incoming / series_uid, self.failed / series_uid
        if dst.exists():
            dst = self.failed / f"{series_uid}.{int(time.time())}"
        with self._lock:
            os.replace(src, dst)
            fsync_dir(self.incoming)
        write_json(dst / "error.json", error)
        return dst

    # ------------------------------------------------------------------ outbox
    def result_record(self, key: str) -> dict | None:
        return read_json(self.results / key / "result.json")

    def update_result(self, key: str, record: dict) -> None:
        write_json(self.results / key / "result.json", record)

    def undelivered(self) -> list[str]:
        """Keys of results with at least one destination not yet delivered (the outbox)."""
        keys = []
        for folder in sorted(self.results.iterdir()):
            if folder.name.startswith("."):
                continue
            rec = read_json(folder / "result.json")
            if rec and any(not d.get("delivered") for d in rec.get("destinations", {}).values()):
                keys.append(folder.name)
        return keys

    def release_payload(self, key: str) -> None:
        """After every destination has them, delete the files that were sent; ``result.json`` (the
        dedup record) and any kept local files (labels, report) stay."""
        folder = self.results / key
        record = self.result_record(key) or {}
        with self._lock:
            for name in record.get("files", []):
                p = folder / name
                if p.is_file():
                    self.used_bytes -= p.stat().st_size
                    p.unlink()
            fsync_dir(folder)
