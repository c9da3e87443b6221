"""``limbseg-rt batch``: segment a cohort (files, folders or a manifest) into one folder, resumable."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
import time
from pathlib import Path

from limbseg_rt.cli.run import (
    _limb_range,
    _positive_int,
    add_engine_arguments,
    add_no_cleanup_argument,
    add_read_arguments,
)


def _workers(text: str) -> int:
    value = _positive_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("need at least 1 worker")
    return value


def _gpus(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 1 or 0.5, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("GPUs per worker cannot be negative")
    return value


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "batch",
        help="segment a cohort of scans into one folder (resumable; local processes or Ray)",
        description="Segment many scans into DIR/<id>/ (labels, report, CSV, completion record) and write "
        "DIR/cohort.csv, scans.csv and summary.json. A rerun skips completed scans and redoes changed ones. "
        "A failed scan is listed and the others go on; the exit code is 11 if any scan failed.",
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="NIfTI files (.nii, .nii.gz) or scan folders; the id is the file name",
    )
    p.add_argument(
        "--manifest",
        default=None,
        metavar="CSV",
        help="CSV with columns id,path[,limb_range,dixon_fat,dixon_water,fat_fraction] instead of INPUTs",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="cohort output folder (created if missing)")
    p.add_argument(
        "--engine", default="local", choices=("local", "ray"), help="local worker processes (default) or a Ray cluster"
    )
    p.add_argument(
        "--workers",
        type=_workers,
        default=None,
        metavar="N",
        help="local: worker processes (default: one per core, at most 4); ray: actors (default: what the cluster holds)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="Ray cluster to use (e.g. auto, or ray://head:10001); default: start Ray on this machine",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=_gpus,
        default=None,
        metavar="G",
        help="ray: GPUs each actor requests (default: 1 for --provider cuda/tensorrt, else 0)",
    )
    p.add_argument("--force", action="store_true", help="redo every scan, even those complete from an earlier run")
    p.add_argument(
        "--limb-range",
        type=_limb_range,
        default=None,
        metavar="A:B",
        help="part of the limb every scan covers (SC-UNet); a manifest's limb_range column wins",
    )
    p.add_argument(
        "--qc",
        action="store_true",
        help="also write each scan's QC page (DIR/<id>/<id>_report.html + PNGs) and DIR/cohort.html (needs the qc extra)",
    )
    add_engine_arguments(p)
    add_read_arguments(p)
    add_batch_analysis_arguments(p)
    return p


def add_batch_analysis_arguments(p: argparse.ArgumentParser) -> None:
    """Issue 22: ``run``'s analysis options for every scan; Dixon images are per scan (manifest columns)."""
    g = p.add_argument_group(
        'analysis and DICOM outputs (as in run; the analysis needs pip install "limbseg-rt[analysis]")'
    )
    g.add_argument(
        "--analysis",
        action="store_true",
        help="per muscle x side measures for every scan (DIR/<id>/<id>_muscles.csv); cohort.csv then has a row per muscle x side",
    )
    add_no_cleanup_argument(g)
    g.add_argument(
        "--split-sides",
        action="store_true",
        help="label maps with a right and a left label per muscle (implies --analysis)",
    )
    g.add_argument(
        "--ff-erode",
        type=_positive_int,
        default=0,
        metavar="N",
        help="erode each muscle N voxels in-plane before Dixon FF (default 0); Dixon images: manifest columns "
        "dixon_fat,dixon_water or fat_fraction",
    )
    g.add_argument(
        "--seg-type",
        default="binary",
        choices=("binary", "labelmap"),
        help="DICOM inputs: kind of DIR/<id>/<id>_seg.dcm, binary (default) or labelmap",
    )


def batch_analysis_from_args(args) -> dict | None:
    """``{"clean", "ff_erode"}`` for ``run_batch(analysis=...)``, or None; exit 2 on options that do not fit."""
    from limbseg_rt.cli.run import AnalysisUsageError

    if not (args.analysis or args.split_sides):
        if args.no_clean or args.ff_erode:
            raise AnalysisUsageError("--no-cleanup and --ff-erode need --analysis")
        return None
    return {"clean": not args.no_clean, "ff_erode": int(args.ff_erode)}


class BatchProgress:
    """One line over scans with counts, rate and ETA on stderr; on a file or pipe, one line per failure."""

    def __init__(self, stream=None):
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.done = self.total = self.failed = self.reused = 0

    def update(self, done: int, total: int, outcome: dict) -> None:
        self.done, self.total = done, total
        if outcome["status"] == "failed":
            self.failed += 1
            if not self.tty:
                self.stream.write(
                    f"limbseg-rt: warning: scan {outcome['id']} failed (exit {outcome['exit_code']}): {outcome['message']}\n"
                )
        elif outcome["status"] == "skipped":
            self.reused += 1
        if self.tty:
            self.stream.write("\r" + self.line() + "\033[K")
            self.stream.flush()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.start
        worked = self.done - self.reused
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(round(frac * 24)) + "-" * (24 - int(round(frac * 24)))
        rate = f", {worked / elapsed * 3600:.0f} scans/h" if worked and elapsed > 0 else ""
        eta = ""
        if worked and self.done < self.total:
            eta = f", ETA {_duration(elapsed / worked * (self.total - self.done))}"
        extra = "".join(f", {n} {w}" for n, w in ((self.failed, "failed"), (self.reused, "reused")) if n)
        return f"batch: [{bar}] {self.done}/{self.total} scans{extra}{rate}, {_duration(elapsed)}{eta}"

    def close(self) -> None:
        if self.total:
            self.stream.write(("\r" if self.tty else "") + self.line() + ("\033[K" if self.tty else "") + "\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return (
        f"{s // 3600}h{s % 3600 // 60:02d}m"
        if s >= 3600
        else f"{s // 60}m{s % 60:02d}s"
        if s >= 60
        else f"{seconds:.1f}s"
    )


def _interrupt_on_sigterm() -> dict:
    """SIGTERM, SIGHUP (and SIGINT) raise KeyboardInterrupt once; which one came is kept for the exit code."""
    state = {"signal": None}

    def handler(signum, frame):
        if state["signal"] is None:
            state["signal"] = signum
            raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, handler)
    return state


def main(args) -> int:
    from limbseg_rt.cli.run import read_options_from_args, segmenter_kwargs_from_args
    from limbseg_rt.runtime.cohort.batch import run_batch
    from limbseg_rt.runtime.cohort.jobs import ManifestError, jobs_from_paths, load_manifest

    if args.manifest and args.inputs:
        raise ManifestError("give either INPUT paths or --manifest, not both")
    jobs = load_manifest(args.manifest) if args.manifest else jobs_from_paths(args.inputs)
    if args.limb_range is not None:
        jobs = [j if j.limb_range else dataclasses.replace(j, limb_range=args.limb_range) for j in jobs]
    analysis = batch_analysis_from_args(args)
    if getattr(args, "qc", False):
        from limbseg_rt.runtime.qc.write import check_available

        check_available()
    progress = BatchProgress()
    state = _interrupt_on_sigterm()
    try:
        result = run_batch(
            jobs,
            args.out,
            segmenter_kwargs=segmenter_kwargs_from_args(args),
            read_options=read_options_from_args(args),
            engine=args.engine,
            workers=args.workers,
            force=args.force,
            ray_address=args.ray_address,
            gpus_per_worker=args.gpus_per_worker,
            progress=progress.update,
            analysis=analysis,
            split_sides=bool(args.split_sides),
            seg_type=args.seg_type,
        )
    except KeyboardInterrupt:
        if progress.tty:
            progress.stream.write("\n")
        signum = state["signal"] or signal.SIGINT
        complete = sum(1 for j in jobs if (Path(args.out) / j.id / "completed.json").is_file())  # on disk, any engine
        print(
            f"limbseg-rt: error: interrupted ({signal.Signals(signum).name}) with {complete} of {len(jobs)} scans "
            f"complete in {args.out}; rerun the same command to finish",
            file=sys.stderr,
        )
        return 128 + int(signum)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
    progress.close()
    render(result)
    if getattr(args, "qc", False):
        from limbseg_rt.runtime.qc.cohort_page import write_cohort_page

        qc_files = write_cohort_page(args.out)
        print(f"wrote {qc_files['cohort_html']} ({len(qc_files) - 1} scan pages)")
    return result.exit_code


def render(result, out=None) -> None:
    out = out if out is not None else sys.stdout
    s = result.summary
    c, t, e = s["counts"], s["throughput"], s["engine"]
    rate = f" ({t['scans_per_hour']:.0f} scans/hour)" if t.get("scans_per_hour") and c["segmented"] else ""
    print(
        f"{c['scans']} scans: {c['segmented']} segmented, {c['reused']} reused from an earlier run, {c['failed']} failed"
        f" in {_duration(t['wall_s'])}{rate}",
        file=out,
    )
    for r in e.get("ready", [])[:1]:
        where = f"{e['workers']} worker(s)" + (
            f" x {e['threads_per_worker']} thread(s)" if e.get("threads_per_worker") else ""
        )
        if e["engine"] == "ray":
            where = f"Ray {e['ray_version']} ({e['address']}), {e['workers']} actor(s)"
        print(
            f"engine {e['engine']}: {where}; provider {r['provider']}, precision {r['precision']}, "
            f"model {r['model_file']} (sha256 {r['model_sha256'][:12]})",
            file=out,
        )
    print("wrote " + ", ".join(str(p) for p in result.written), file=out)
    if result.failed:
        print(
            f"limbseg-rt: error: {len(result.failed)} of {c['scans']} scans failed (listed in scans.csv and cohort.csv):",
            file=sys.stderr,
        )
        for f in s["failures"][:20]:
            print(f"  {f['id']}: exit {f['exit_code']}: {f['message']}", file=sys.stderr)
        if len(s["failures"]) > 20:
            print(f"  ... and {len(s['failures']) - 20} more", file=sys.stderr)
