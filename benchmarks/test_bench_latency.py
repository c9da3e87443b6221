"""Latency per slice and throughput of every engine x precision x batch, with achieved GFLOP/s and the
share of the machine's own GEMM ceiling measured in the same run (pytest-benchmark groups per model
and batch, so ``--benchmark-json`` holds comparable series)."""

from __future__ import annotations

import time

import numpy as np
from _harness import budget_rounds, time_calls


def _rounds(full: bool, batch: int) -> int:
    if not full:
        return 7
    return 5 if batch == 1 else 3


def test_latency(benchmark, bench, results, ceilings, full_run, model_name, engine_key, batch, demo_ok):
    eng = bench.engine(model_name, engine_key)
    m = bench.model(model_name)
    images, pos = bench.timing_input(model_name, batch)
    macs = bench.macs(model_name)

    t0 = time.perf_counter()
    logits = eng.predict(images, pos)  # a wrong engine must not be timed: check what it returns
    first_s = time.perf_counter() - t0
    assert logits.shape[:2] == (batch, 38) and logits.shape[2:] == m.hw, logits.shape
    assert np.isfinite(logits).all(), f"{eng.label} {eng.precision} returned non-finite logits"

    benchmark.group = f"{model_name} batch {batch}"
    benchmark.name = f"{eng.label} {eng.precision} b{batch}"
    benchmark.extra_info.update(
        {
            "model": model_name,
            "engine": eng.label,
            "precision": eng.precision,
            "batch": batch,
            "macs_per_slice": macs,
            "hw": list(m.hw),
        }
    )
    rounds = budget_rounds(first_s, _rounds(full_run, batch))  # slow machines: fewer rounds, same budget
    benchmark.pedantic(eng.predict, args=(images, pos), rounds=rounds, warmup_rounds=1, iterations=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None and stats.stats.rounds:
        median = float(stats.stats.median)
    else:  # --benchmark-disable: still measure, the summary and gates need numbers
        median = float(np.median(time_calls(lambda: eng.predict(images, pos), rounds=rounds)))

    per_slice = median / batch
    gflops = 2.0 * macs / per_slice / 1e9
    ceiling = ceilings.for_precision(eng.precision)
    row = results.row(model_name, eng.label, eng.precision, batch)
    row.ms_per_slice = per_slice * 1e3
    row.slices_per_s = 1.0 / per_slice
    row.gflops = gflops
    row.pct_ceiling = 100.0 * gflops / ceiling if ceiling else None
    benchmark.extra_info.update({"ms_per_slice": row.ms_per_slice, "gflops": gflops, "pct_of_ceiling": row.pct_ceiling})
