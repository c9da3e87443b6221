"""The cohort folder on disk: per-scan folders published atomically, completion records, recovery.

Layout of ``DIR``::

    DIR/<id>/<id>_labels.nii.gz (+ .itksnap.txt, .ctbl), <id>_report.json, <id>_volumes.csv,
            completed.json          the completion record, written last
    DIR/cohort.csv, cohort.parquet, scans.csv, summary.json   (written when the batch ends)
    DIR/.batch.lock                 held (flock) while a batch writes here

A scan is written into a hidden staging folder ``DIR/.<id>.partial-<token>/`` and then renamed to
``DIR/<id>/`` (one ``rename``: readers see all of it or nothing). A scan redone over an earlier
result first moves the old folder to ``DIR/.<id>.replaced-<token>/``, renames the new one into
place, then deletes the old one. ``recover`` (run under the lock before and after every batch)
finishes what an interrupted or killed batch left: a ``replaced`` folder whose scan folder is
missing is moved back (the earlier result is never lost), every other hidden staging folder is
deleted. So ``DIR`` only ever holds complete per-scan folders.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from pathlib import Path

from limbseg_rt.runtime.errors import OutputError

RECORD_NAME = "completed.json"
RECORD_SCHEMA = "limbseg-rt.cohort-scan/1"
LOCK_NAME = ".batch.lock"
COHORT_FILES = ("cohort.csv", "cohort.parquet", "scans.csv", "summary.json")
_STAGING_RE = re.compile(r"^\.(?P<id>.+)\.(?P<kind>partial|replaced)-[0-9a-f]{8,}$")


def scan_dir(root: Path, scan_id: str) -> Path:
    return Path(root) / scan_id


def output_names(scan_id: str) -> dict[str, str]:
    """File names inside ``DIR/<id>/`` (they carry the id, so a copied file still says whose it is)."""
    return {
        "labels": f"{scan_id}_labels.nii.gz",
        "report": f"{scan_id}_report.json",
        "csv": f"{scan_id}_volumes.csv",
        "measures_csv": f"{scan_id}_muscles.csv",  # with the analysis
        "seg": f"{scan_id}_seg.dcm",  # DICOM inputs
    }


def new_staging_dir(root: Path, scan_id: str) -> Path:
    path = Path(root) / f".{scan_id}.partial-{secrets.token_hex(6)}"
    path.mkdir()
    return path


def write_record(folder: Path, record: dict) -> Path:
    """Write the completion record (last file of a scan folder), fsynced so a published folder has it."""
    path = Path(folder) / RECORD_NAME
    data = json.dumps({"schema": RECORD_SCHEMA, **record}, indent=2, default=str) + "\n"
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def read_record(root: Path, scan_id: str) -> dict | None:
    """The scan's completion record, or None when absent, unreadable or pointing at missing files."""
    folder = scan_dir(root, scan_id)
    try:
        record = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("schema") != RECORD_SCHEMA:
        return None
    outputs = record.get("outputs") or {}
    if not outputs or not all((folder / name).is_file() for name in outputs.values()):
        return None
    return record


def record_matches(record: dict | None, *, input_sha256: str, model_sha256: str, settings: dict) -> bool:
    """True if ``record`` was made from the same input bytes, model file and output-affecting settings."""
    if not record:
        return False
    return (
        record.get("input", {}).get("sha256") == input_sha256
        and record.get("model", {}).get("sha256") == model_sha256
        and _canon(record.get("settings")) == _canon(settings)
    )


def _canon(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def publish(staging: Path, root: Path, scan_id: str) -> Path:
    """Rename the finished staging folder to ``DIR/<id>/``, replacing an earlier one (see module doc)."""
    final = scan_dir(root, scan_id)
    old = None
    if final.exists():
        old = Path(root) / f".{scan_id}.replaced-{secrets.token_hex(6)}"
        os.rename(final, old)
    os.rename(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def discard(staging: Path | None) -> None:
    if staging is not None:
        shutil.rmtree(staging, ignore_errors=True)


def recover(root: Path) -> dict[str, list[str]]:
    """Finish or undo what an interrupted batch left in ``root`` (see module docstring).

    Call only while holding the lock and with no worker writing. Returns the ids restored and the
    staging folders removed.
    """
    restored: list[str] = []
    removed: list[str] = []
    root = Path(root)
    if not root.is_dir():
        return {"restored": restored, "removed": removed}
    entries = sorted(root.iterdir(), key=lambda p: p.name)
    for p in entries:  # restore first: a replaced folder may be the only copy of a result
        m = _STAGING_RE.match(p.name)
        if m and m["kind"] == "replaced" and p.is_dir() and not scan_dir(root, m["id"]).exists():
            os.rename(p, scan_dir(root, m["id"]))
            restored.append(m["id"])
    for p in entries:
        if _STAGING_RE.match(p.name) and p.exists():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    return {"restored": restored, "removed": removed}


class BatchLock:
    """An exclusive ``flock`` on ``DIR/.batch.lock``: two batches never write one folder at once."""

    def __init__(self, root: Path):
        self.path = Path(root) / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> BatchLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.read(fd, 64).decode("ascii", "replace").strip()
            finally:
                os.close(fd)
            raise OutputError(
                f"another batch is writing to {self.path.parent} ({holder or 'unknown process'}); "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock; the file stays (harmless, reused)
            self._fd = None
