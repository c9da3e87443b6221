"""``limbseg-rt evaluate`` against medpy on the same label pair, measured in the same run.

The pair (``_eval_pair.py``): phantom ground truth with 37 muscles against a plausible prediction
(shifted one voxel, eroded / dilated muscles, one muscle missed, a false-positive island).

- quick: 128 x 128 x 40 voxels of 3.5 x 3.5 x 5 mm; 3 interleaved rounds (ours, medpy, ours, ...).
- full (slow): 512 x 512 x 150 voxels of 0.875 x 0.875 x 5 mm (the issue's size); 1 round.

Each side is a fresh process (``_eval_probe.py``) that reads both files and computes DSC, HD,
HD95 and ASSD of every muscle: ours through ``evaluate_files``, medpy through
``medpy.metric.binary`` on each label's bounding box (uncropped medpy needs about 30 s per
distance transform at full size, eight per label: hours). Gates, both ratios of this run: medpy's
wall time over ours, and our peak RSS over medpy's; every value equal to medpy's to 1e-6.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _eval_pair import FULL_SHAPE, FULL_SLICES, QUICK_SHAPE, QUICK_SLICES, write_pair
from _harness import gate_at_least, gate_at_most

PROBE = str(Path(__file__).resolve().with_name("_eval_probe.py"))
SPEEDUP_MIN = {"quick": 1.5, "full": 5.0}
RSS_RATIO_MAX = 1.0
TOL = 1e-6


def _probe(pred: Path, ref: Path, mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, PROBE, str(pred), str(ref), mode], capture_output=True, text=True, timeout=3600
    )
    if proc.returncode != 0:
        raise AssertionError(f"{mode} probe failed ({proc.returncode}): {proc.stderr[-1500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _versus_medpy(results, out_dir: Path, shape, slices: int, rounds: int, size: str) -> None:
    pytest.importorskip("medpy.metric.binary")
    pred, ref = write_pair(out_dir, shape, slices)
    runs: dict[str, list[dict]] = {"ours": [], "medpy": []}
    for _ in range(rounds):
        for mode in runs:
            runs[mode].append(_probe(pred, ref, mode))
    ours, medpy = runs["ours"][-1]["labels"], runs["medpy"][-1]["labels"]
    assert sorted(ours) == sorted(medpy) and len(ours) >= 30, (sorted(ours), sorted(medpy))
    worst = max(abs(a - b) for k in ours for a, b in zip(ours[k], medpy[k]))
    assert worst <= TOL, f"values differ from medpy by up to {worst:.3g} (DSC, HD, HD95, ASSD)"

    wall = {m: float(np.median([r["wall_s"] for r in v])) for m, v in runs.items()}
    rss = {m: max(r["peak_rss_mib"] for r in v) for m, v in runs.items()}
    speedup, rss_ratio = wall["medpy"] / wall["ours"], rss["ours"] / rss["medpy"]
    what = f"evaluate {'x'.join(map(str, shape))}x{slices}, {len(ours)} muscles"
    for mode in runs:
        results.runs.append(
            {
                "what": f"{what}: {mode}",
                "engine": "limbseg-rt" if mode == "ours" else "medpy (per-label box)",
                "slices": slices,
                "wall_s": wall[mode],
                "model_s": None,
                "peak_rss_mib": rss[mode],
                "stages": {"cpu_s": float(np.median([r["cpu_s"] for r in runs[mode]]))},
            }
        )
    results.gate(
        f"{what}: medpy wall time / ours",
        speedup,
        f">= {SPEEDUP_MIN[size]}",
        speedup >= SPEEDUP_MIN[size],
        f"ours {wall['ours']:.2f}s, medpy {wall['medpy']:.2f}s, max |difference| {worst:.2g}",
    )
    results.gate(
        f"{what}: our peak RSS / medpy's",
        rss_ratio,
        f"<= {RSS_RATIO_MAX}",
        rss_ratio <= RSS_RATIO_MAX,
        f"ours {rss['ours']:.0f} MiB, medpy {rss['medpy']:.0f} MiB",
    )
    gate_at_least(
        f"{what}: speed-up over medpy",
        speedup,
        SPEEDUP_MIN[size],
        unit="x",
        detail=f"ours {wall['ours']:.2f}s vs medpy {wall['medpy']:.2f}s",
    )
    gate_at_most(
        f"{what}: peak RSS over medpy's",
        rss_ratio,
        RSS_RATIO_MAX,
        unit="x",
        detail=f"ours {rss['ours']:.0f} MiB vs medpy {rss['medpy']:.0f} MiB",
    )


def test_evaluate_vs_medpy_quick(results, tmp_path):
    _versus_medpy(results, tmp_path, QUICK_SHAPE, QUICK_SLICES, rounds=3, size="quick")


@pytest.mark.slow
def test_evaluate_vs_medpy_full(results, full_run, tmp_path):
    if not full_run:
        pytest.skip("the 512 x 512 x 150 pair: run with --full")
    _versus_medpy(results, tmp_path, FULL_SHAPE, FULL_SLICES, rounds=1, size="full")
