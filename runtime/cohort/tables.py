"""Cohort-level outputs: ``cohort.csv`` (+ ``cohort.parquet``), ``scans.csv`` and ``summary.json``.

``cohort.csv`` is long form: the rows of every scan's ``<id>_volumes.csv`` (one per muscle), or, when
the batch ran the analysis, of its ``<id>_muscles.csv`` (one per muscle x side, with the muscle's
``asymmetry_volume_percent`` and ``asymmetry_max_acsa_percent`` from the report on both rows);
whatever columns the per-scan CSV has are kept, the union over scans, in first-seen order, behind four columns ``scan_id, status, exit_code,
message``. A failed scan has one row with its exit code and message and the measure columns
empty, so the table lists every scan of the cohort. ``scans.csv`` has one row per scan: what
happened to it in this run (``segmented``, ``reused`` from an earlier run, ``failed``), its input
SHA-256 and time. ``cohort.parquet`` holds the ``cohort.csv`` table (typed columns) when pyarrow is
installed. Every file is one ``outputs.OutputSet`` (a temporary beside it, then a rename; umask mode).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

from limbseg_rt.runtime.cohort import store
from limbseg_rt.runtime.cohort.jobs import ScanJob
from limbseg_rt.runtime.cohort.worker import STATUS_FAILED, STATUS_SKIPPED
from limbseg_rt.runtime.io.outputs import OutputSet

LEAD_COLUMNS = ("scan_id", "status", "exit_code", "message")
SCAN_COLUMNS = (
    "id",
    "source",
    "status",
    "this_run",
    "exit_code",
    "message",
    "input_sha256",
    "seconds",
    "slices",
    "worker",
    "peak_rss_mib",
    "folder",
)
TEXT_COLUMNS = ("scan_id", "status", "message", "code", "name", "side")
# cohort.csv column -> key of the report's analysis.asymmetry entries: (R - L) / ((R + L) / 2) x 100 %
ASYMMETRY_COLUMNS = {"asymmetry_volume_percent": "volume_percent", "asymmetry_max_acsa_percent": "max_acsa_percent"}
SUMMARY_SCHEMA = "limbseg-rt.cohort-summary/1"


def _publish(path: Path, write: Callable[[Path], None], what: str) -> Path:
    """Write one table through ``outputs.OutputSet``: ``write(tmp)`` fills a temporary beside ``path``."""
    with OutputSet() as out:
        out.add("table", path, what=what)
        out.check()
        tmp = out.temp("table")
        with out.writing("table"):
            write(tmp)
        return out.commit()["table"]


def _text(tmp: Path):
    return open(tmp, "w", encoding="utf-8", newline="")


def _scan_rows(root: Path, job: ScanJob, outcome: dict) -> tuple[dict | None, list[str], list[dict]]:
    """(record, columns, rows) of one scan's table; a failed scan has no record and no rows.

    With the analysis (the record lists ``measures_csv``) the rows are the scan's ``<id>_muscles.csv``
    (one per muscle x side) plus the muscle's asymmetry from the report (same value on both sides);
    otherwise its ``<id>_volumes.csv`` (one per muscle)."""
    if outcome["status"] == STATUS_FAILED:
        return None, [], []
    record = store.read_record(root, job.id)
    if record is None:
        return None, [], []
    folder = store.scan_dir(root, job.id)
    outputs = record["outputs"]
    name = outputs.get("measures_csv") or outputs["csv"]
    reader = csv.DictReader(io.StringIO((folder / name).read_text(encoding="utf-8")))
    columns, rows = list(reader.fieldnames or []), list(reader)
    if "measures_csv" in outputs:
        report = json.loads((folder / outputs["report"]).read_text(encoding="utf-8"))
        asym = {a["code"]: a for a in ((report.get("analysis") or {}).get("asymmetry") or [])}
        columns += list(ASYMMETRY_COLUMNS)
        for row in rows:
            a = asym.get(row.get("code"), {})
            for col, key in ASYMMETRY_COLUMNS.items():
                row[col] = "" if a.get(key) is None else repr(float(a[key]))
    return record, columns, rows


def write_cohort_csv(root: Path, jobs: list[ScanJob], outcomes: dict[str, dict]) -> Path:
    """Write ``DIR/cohort.csv`` (see module docstring); reads each scan's CSV twice, holds one at a time."""
    root = Path(root)
    columns: list[str] = []
    for job in jobs:  # first pass: the union of the per-scan columns
        _, cols, _ = _scan_rows(root, job, outcomes[job.id])
        columns.extend(c for c in cols if c not in columns)

    def write(tmp: Path) -> None:
        with _text(tmp) as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow([*LEAD_COLUMNS, *columns])
            for job in jobs:
                o = outcomes[job.id]
                record, _, rows = _scan_rows(root, job, o)
                if record is None:
                    w.writerow([job.id, STATUS_FAILED, o["exit_code"], o["message"], *([""] * len(columns))])
                    continue
                msg = o["message"] if o["status"] != STATUS_SKIPPED else ""
                for row in rows:
                    w.writerow([job.id, record["status"], record["exit_code"], msg, *(row.get(c, "") for c in columns)])

    return _publish(root / "cohort.csv", write, "cohort table")


def write_parquet(csv_path: Path) -> Path | None:
    """``cohort.parquet`` beside ``cohort.csv`` when pyarrow is installed (else None: nothing written)."""
    try:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq
    except ImportError:
        return None
    import pyarrow as pa

    with open(csv_path, encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh))
    types = {c: pa.string() for c in header if c in TEXT_COLUMNS}
    table = pacsv.read_csv(
        csv_path, convert_options=pacsv.ConvertOptions(column_types=types, strings_can_be_null=False)
    )
    return _publish(csv_path.with_suffix(".parquet"), lambda tmp: pq.write_table(table, tmp), "cohort table")


def this_run(outcome: dict) -> str:
    return {"skipped": "reused", "failed": "failed"}.get(outcome["status"], "segmented")


def write_scans_csv(root: Path, jobs: list[ScanJob], outcomes: dict[str, dict]) -> Path:
    def write(tmp: Path) -> None:
        with _text(tmp) as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(SCAN_COLUMNS)
            for job in jobs:
                o = outcomes[job.id]
                record = store.read_record(Path(root), job.id) if o["status"] != STATUS_FAILED else None
                status = record["status"] if record else STATUS_FAILED
                slices = o.get("slices") if o.get("slices") is not None else (record or {}).get("slices", "")
                w.writerow(
                    [
                        job.id,
                        job.source,
                        status,
                        this_run(o),
                        o["exit_code"],
                        o["message"],
                        o["input_sha256"],
                        f"{o['seconds']:.3f}",
                        slices,
                        o.get("worker") or "",
                        "" if o.get("peak_rss_mib") is None else f"{o['peak_rss_mib']:.1f}",
                        job.id if record else "",
                    ]
                )

    return _publish(Path(root) / "scans.csv", write, "scan table")


def write_summary(root: Path, summary: dict) -> Path:
    text = json.dumps({"schema": SUMMARY_SCHEMA, **summary}, indent=2, default=str) + "\n"

    def write(tmp: Path) -> None:
        with _text(tmp) as fh:
            fh.write(text)

    return _publish(Path(root) / "summary.json", write, "cohort summary")
