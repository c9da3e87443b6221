"""Run ``limbseg-rt run``'s library path on one scan in a fresh process and print one JSON line:
peak RSS (MiB, ``VmHWM`` of this process: model and libraries included; see
``runtime.report.peak_rss_mib`` for why not ``ru_maxrss``), RSS after building the Segmenter
(before any scan), wall time and the report's stage timings.

Usage: python _rss_probe.py MODEL.onnx SCAN.nii OUT_DIR --provider P [--batch-size N]
(Run as a script so the parent's own memory never counts.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from limbseg_rt.runtime.report.run_report import peak_rss_mib as _rss_mib


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("scan")
    ap.add_argument("out_dir")
    ap.add_argument("--provider", default="auto")
    ap.add_argument("--batch-size", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)

    from limbseg_rt.runtime.api import Segmenter

    batch = a.batch_size if a.batch_size == "auto" else int(a.batch_size)
    out = Path(a.out_dir)
    seg = Segmenter(a.model, provider=a.provider, threads=a.threads, batch_size=batch)
    rss_loaded = _rss_mib()
    t0 = time.perf_counter()
    result = seg.segment(a.scan)
    result.save(out / "labels.nii.gz", out / "report.json", input_path=a.scan)
    wall = time.perf_counter() - t0
    timings = {k: v for k, v in result.report.manifest["timings_s"].items() if isinstance(v, (int, float))}
    print(
        json.dumps(
            {
                "peak_rss_mib": _rss_mib(),
                "rss_after_load_mib": rss_loaded,
                "wall_s": wall,
                "timings_s": timings,
                "engine": result.report.manifest["engine"]["provider"],
                "precision": result.report.manifest["engine"]["precision"],
                "batch_size": result.report.manifest["pipeline"]["batch_size"],
            }
        )
    )
    seg.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
