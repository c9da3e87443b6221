"""``limbseg-rt tune``: measure which precision is fastest at fp32-like labels on this machine, and keep
the answer for ``--precision auto`` (``engine/precision_profile.py`` holds the profile and its rules).

For each bundled model with more than one candidate and each CPU provider that runs here, every
candidate precision (the bundled fp32 and int8 files; bf16 = the fp32 file in bf16 on the OpenVINO
engine, on a CPU with AVX512-BF16 or AMX-BF16) segments the same phantom scan: one warm-up run, then
``repeats`` timed runs, best kept (seconds per slice, whole pipeline: preprocessing, engine, argmax).
Its labels are compared with the fp32 labels (mean Dice over the muscles fp32 finds). The winner is
the fastest candidate whose agreement is at least ``MIN_AGREEMENT``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from limbseg_rt.runtime.engine import precision_profile as pp
from limbseg_rt.runtime.engine.cpu import CpuInfo, detect
from limbseg_rt.runtime.engine.providers import (
    ENGINE_OPENVINO,
    OPENVINO_EP,
    OPENVINO_RUNTIME,
    available_engines,
    engine_for,
)
from limbseg_rt.runtime.model.bundled import bundled_files
from limbseg_rt.runtime.model.metadata import ARCHITECTURES
from limbseg_rt.runtime.report.metrics import label_counts

TUNE_PHANTOM_SEED = 9_001  # not a training or held-out seed of the demo models


@dataclass(frozen=True)
class TuneResult:
    """One (provider, arch): what was measured and chosen. ``measured``: precision ->
    ``{"s_per_slice", "agreement"}``; ``skipped``: why nothing was measured (else None)."""

    provider: str
    arch: str
    chosen: str | None
    measured: dict
    skipped: str | None = None


def candidates(provider: str, files: dict, cpu: CpuInfo, available) -> list[str]:
    """Precisions ``provider`` can run from ``files`` (precision -> path) on this machine, fp32 first."""
    out = [p for p in ("fp32", "int8") if p in files]
    if (
        provider == "openvino"
        and "fp32" in files
        and pp.has_bf16(cpu)
        and engine_for(provider, available) == ENGINE_OPENVINO
    ):
        out.append("bf16")
    return out


def cpu_providers(available=None) -> list[str]:
    """The CPU providers that run here (``cpu`` always; ``openvino`` when an engine serves it)."""
    available = available_engines() if available is None else available
    return ["cpu"] + (["openvino"] if OPENVINO_EP in available or OPENVINO_RUNTIME in available else [])


def _mean_agreement(labels, reference) -> float:
    """Mean Dice over the muscles the fp32 labels find (one confusion pass over the volume)."""
    codes = [int(c) for c in np.unique(reference) if c != 0]
    if not codes:
        return 1.0
    n = int(max(labels.max(), reference.max())) + 1
    return label_counts(labels, reference, n).mean_dice(codes)[0]


def measure(
    provider: str,
    arch: str,
    *,
    slices: int = 24,
    repeats: int = 3,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
    cpu: CpuInfo | None = None,
) -> TuneResult:
    """Measure every candidate of bundled ``arch`` on ``provider`` (see the module docstring)."""
    from limbseg_rt.runtime.api import Segmenter
    from limbseg_rt.runtime.phantom.generate import make_phantom

    cpu = cpu or detect()
    available = available_engines()
    _, files = bundled_files(arch)
    cands = candidates(provider, files, cpu, available)
    if len(cands) < 2:
        why = f"only {', '.join(cands) or 'no file'} bundled: nothing to choose"
        return TuneResult(provider, arch, cands[0] if cands else None, {}, skipped=why)
    if "fp32" not in cands:
        return TuneResult(provider, arch, None, {}, skipped="no fp32 file to compare the others with")
    image, _ = make_phantom(TUNE_PHANTOM_SEED, slices=slices)
    measured, reference = {}, None
    for precision in cands:
        with Segmenter(arch, provider=provider, precision=precision, threads=threads) as seg:
            if seg.precision != precision:  # never record what did not run
                measured[precision] = {
                    "s_per_slice": None,
                    "agreement": 0.0,
                    "note": f"asked {precision}, engine ran {seg.precision}",
                }
                continue
            seg.segment(image)  # warm-up: first-call allocations and kernel selection
            best, labels = float("inf"), None
            for _ in range(repeats):
                t0 = time.perf_counter()
                result = seg.segment(image)
                best = min(best, time.perf_counter() - t0)
                labels = result.labels_canonical
        if precision == "fp32":
            reference = labels
        agreement = 1.0 if precision == "fp32" else _mean_agreement(labels, reference)
        measured[precision] = {"s_per_slice": round(best / slices, 5), "agreement": round(agreement, 5)}
        if progress:
            progress(
                f"{provider:<9} {arch:<15} {precision:<5} {best / slices * 1000:8.1f} ms/slice  "
                f"agreement {agreement:.4f}"
            )
    usable = {p: m for p, m in measured.items() if m["s_per_slice"] is not None}
    return TuneResult(provider, arch, pp.pick(usable), measured)


def tune(
    archs=ARCHITECTURES,
    providers=None,
    *,
    slices: int = 24,
    repeats: int = 3,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
    save: bool = True,
) -> list[TuneResult]:
    """Measure ``archs`` x ``providers`` (default: the CPU providers that run here) and, with
    ``save``, write the chosen precisions into the profile (``precision_profile.profile_path()``)."""
    cpu = detect()
    providers = cpu_providers() if providers is None else list(providers)
    results, entries = [], {}
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for provider in providers:
        for arch in archs:
            r = measure(provider, arch, slices=slices, repeats=repeats, threads=threads, progress=progress, cpu=cpu)
            results.append(r)
            if r.skipped is None and r.chosen is not None:
                _, files = bundled_files(arch)
                entries[pp.entry_key(provider, arch)] = {
                    "precision": r.chosen,
                    "measured": r.measured,
                    "min_agreement": pp.MIN_AGREEMENT,
                    "signature": pp.signature(files, cpu),
                    "tuned_at": stamp,
                    "phantom": {"seed": TUNE_PHANTOM_SEED, "slices": slices, "repeats": repeats},
                }
    if save and entries:
        pp.save_entries(entries)
    return results
