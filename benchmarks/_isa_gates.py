"""The auto-configuration speed gates, derived from the machine instead of from one CPU.

Given what one run measured (the CPU, its ceilings, PyTorch eager fp32 and the auto configuration
on the same slices, timed interleaved), ``judge_auto_config`` returns every gate with its verdict:

0. the ceilings judged are each source's best of the measurement at the start of the run and the
   one interleaved with the model (``Ceilings.best_of``: a ceiling is a peak, and load from other
   processes only pulls it down);
1. the ceilings are plausible (``Ceilings.problems``), else nothing else is judged;
2. share of the int8 ceiling = achieved GOPS / int8 ceiling >= 0.75 (0.45 on AMX machines:
   ``MIN_CEILING_SHARE_BY_ISA`` says why), and <= 1.05 (above that the ceiling was under-measured,
   and the gate says so instead of passing);
3. speed-up over PyTorch eager fp32 >= 0.6 x (int8 ceiling / fp32 ceiling): the int8 configuration
   must turn at least 60 % of this CPU's int8-over-fp32 hardware advantage into speed over the
   fp32 reference (``SPEEDUP_FRACTION`` says why 0.6). (A threshold of 0.8 x int8 ceiling / PyTorch's *achieved* GFLOP/s would be the
   share gate again in other words: speed-up = achieved / PyTorch's GFLOP/s, so it holds exactly
   when achieved / ceiling >= 0.8; it could never tell anything the share gate does not.)

``judge_bf16`` does the same for the OpenVINO bf16 engine (what ``limbseg-rt tune`` picks on AMX
machines): its share of the bf16 ceiling measured in the same run, >= ``MIN_BF16_SHARE``.

The old fixed ">= 4x" stays the documented expectation on VNNI machines (``EXPECTED_VNNI_SPEEDUP``):
reported, not gated. Every message names the ISA class it judged. Pure arithmetic, so recorded runs
from other machines (``benchmarks/fixtures/``) exercise it in ``test_bench_isa_gates.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from _ceilings import Ceilings

from limbseg_rt.runtime.engine.cpu import CpuInfo

MIN_CEILING_SHARE = 0.75
# On AMX the int8 ceiling is the tile unit's peak on a 2048^3 GEMM (3096 GOPS recorded on a 2-core
# Xeon, 13x its fp32 rate); the best engine we ship (OpenVINO int8, which uses the tiles) turns 55-64 %
# of it into UNet speed (docs/benchmarks.md), so 0.75 would fail every AMX machine for no software
# fault. 0.45 still catches what the gate is for there: an engine that lost its AMX path runs at its
# VNNI speed, a quarter of the tile peak or less.
MIN_CEILING_SHARE_BY_ISA = {"amx": 0.45}
MAX_CEILING_SHARE = 1.05
# OpenVINO bf16 convolutions ran at about 90 % of its bf16 MatMul on Zen 4 (docs/engines.md); 0.6
# leaves room for the networks' narrow layers and catches a bf16 request that silently ran fp32.
MIN_BF16_SHARE = 0.6
# On Zen 5 they ran at 106-112 % of the best bf16 GEMM the shipped engines reach (844-892 GFLOP/s vs
# torch 796-882, OpenVINO 746-814 at 2048^3, 2026-12-03): its convolution kernels are blocked better
# than those GEMMs. So the bf16 ceiling counts as under-measured only above 115 %; a bf16 source
# that silently ran fp32 would put the engine near 200 % and is still refused.
MAX_BF16_SHARE = 1.15
# int8 convolution engines reach 65-90 % of the int8 GEMM peak, fp32 engines (PyTorch included)
# 80-100 % of the fp32 one (docs/benchmarks.md), so about 0.65-1.1 of the hardware's int8/fp32
# advantage is what a good int8 engine shows over PyTorch; 0.6 catches one that wastes more.
SPEEDUP_FRACTION = 0.6
EXPECTED_VNNI_SPEEDUP = 4.0


@dataclass(frozen=True)
class AutoRun:
    """One measurement: seconds per call (batch 1) of PyTorch eager fp32 (``ref_s``) and the auto
    configuration (``cand_s``), the network's MACs per slice, and the machine it ran on.
    ``ceilings``: timed interleaved with the model; ``start_ceilings``: measured at the start of the
    same run (None in runs recorded before it was kept)."""

    cpu: CpuInfo
    ceilings: Ceilings
    model: str
    macs: int
    ref_s: float
    cand_s: float
    cand_label: str
    start_ceilings: Ceilings | None = None

    @property
    def judged_ceilings(self) -> Ceilings:
        """Each source's best of the two measurements (module docstring, step 0)."""
        return self.ceilings.best_of(self.start_ceilings)

    @property
    def speedup(self) -> float:
        return self.ref_s / self.cand_s

    @property
    def achieved_gops(self) -> float:
        return 2.0 * self.macs / self.cand_s / 1e9

    @property
    def pytorch_gflops(self) -> float:
        return 2.0 * self.macs / self.ref_s / 1e9

    def to_dict(self) -> dict:
        return {
            "cpu": self.cpu.to_dict(),
            "ceilings": self.ceilings.to_dict(),
            "model": self.model,
            "macs": self.macs,
            "ref_s": self.ref_s,
            "cand_s": self.cand_s,
            "cand_label": self.cand_label,
            "start_ceilings": self.start_ceilings.to_dict() if self.start_ceilings is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> AutoRun:
        return cls(
            cpu=CpuInfo.from_dict(d["cpu"]),
            ceilings=Ceilings.from_dict(d["ceilings"]),
            model=d["model"],
            macs=int(d["macs"]),
            ref_s=float(d["ref_s"]),
            cand_s=float(d["cand_s"]),
            cand_label=d["cand_label"],
            start_ceilings=Ceilings.from_dict(d["start_ceilings"]) if d.get("start_ceilings") else None,
        )


def min_share(isa: str) -> float:
    """The least share of the int8 ceiling the auto configuration must reach on ISA class ``isa``."""
    return MIN_CEILING_SHARE_BY_ISA.get(isa, MIN_CEILING_SHARE)


@dataclass(frozen=True)
class Verdict:
    name: str
    value: float
    threshold: str
    passed: bool
    message: str


def judge_auto_config(run: AutoRun) -> list[Verdict]:
    """Every gate of the module docstring, in order; a failed ceiling check ends the list."""
    isa = run.cpu.isa
    where = f"[{isa}: {run.cpu.model}]"
    who = f"{run.model}: auto CPU config ({run.cand_label})"
    ceilings = run.judged_ceilings
    measured = ceilings.describe() + (
        f" (best of the run's start and the interleaved rounds; interleaved alone: {run.ceilings.describe()})"
        if run.start_ceilings is not None
        else ""
    )
    problems = ceilings.problems()
    if problems:
        return [
            Verdict(
                f"{who} ceilings",
                float("nan"),
                "plausible",
                False,
                f"GATE NOT JUDGED {where}: {'; '.join(problems)}. Measured: {measured}",
            )
        ]
    ceiling = ceilings.int8_gemm_gops
    least = min_share(isa)
    share = run.achieved_gops / ceiling
    out = []
    share_ok = least <= share <= MAX_CEILING_SHARE
    if share > MAX_CEILING_SHARE:
        msg = (
            f"GATE NOT JUDGED {where}: {run.achieved_gops:.0f} GOPS achieved is {share:.0%} of the int8 ceiling "
            f"{ceiling:.0f} GOPS ({ceilings.int8_source}); a share above {MAX_CEILING_SHARE:.0%} means the "
            f"ceiling was under-measured. Measured: {measured}"
        )
    else:
        msg = (
            f"{'ok' if share_ok else 'GATE MISSED'} {where}: {run.achieved_gops:.0f} GOPS = {share:.0%} of the "
            f"int8 ceiling {ceiling:.0f} GOPS ({ceilings.int8_source}); needs >= {least:.0%}"
            + (" (the AMX threshold)" if isa in MIN_CEILING_SHARE_BY_ISA else "")
        )
    out.append(Verdict(f"{who} share of int8 ceiling", share, f">= {least} and <= {MAX_CEILING_SHARE}", share_ok, msg))
    fp32 = ceilings.sgemm_gflops
    required = SPEEDUP_FRACTION * ceiling / fp32
    speed_ok = run.speedup >= required
    out.append(
        Verdict(
            f"{who} vs PyTorch eager fp32",
            run.speedup,
            f">= {required:.2f}x",
            speed_ok,
            f"{'ok' if speed_ok else 'GATE MISSED'} {where}: speed-up {run.speedup:.2f}x "
            f"({run.cand_s * 1e3:.1f} vs {run.ref_s * 1e3:.1f} ms/slice); needs >= {required:.2f}x = "
            f"{SPEEDUP_FRACTION} x int8 ceiling {ceiling:.0f} GOPS / fp32 ceiling {fp32:.0f} GFLOP/s "
            f"(PyTorch reached {run.pytorch_gflops:.0f} GFLOP/s)"
            + (f"; expected on VNNI machines: >= {EXPECTED_VNNI_SPEEDUP}x" if run.cpu.has_vnni else ""),
        )
    )
    return out


def judge_bf16(cpu: CpuInfo, ceilings: Ceilings, model: str, macs: int, seconds: float, label: str) -> Verdict:
    """The bf16 engine (``label``, ``seconds`` per slice at batch 1) against the bf16 ceiling of the same
    run: >= ``MIN_BF16_SHARE`` and <= ``MAX_BF16_SHARE``; not judged without a plausible ceiling."""
    where = f"[{cpu.isa}: {cpu.model}]"
    name = f"{model}: {label} share of bf16 ceiling"
    problems = ceilings.bf16_problems()
    if problems:
        return Verdict(name, float("nan"), "plausible", False, f"GATE NOT JUDGED {where}: {'; '.join(problems)}")
    achieved = 2.0 * macs / seconds / 1e9
    ceiling = ceilings.bf16_gflops
    share = achieved / ceiling
    ok = MIN_BF16_SHARE <= share <= MAX_BF16_SHARE
    verdict = "ok" if ok else "GATE NOT JUDGED" if share > MAX_BF16_SHARE else "GATE MISSED"
    tail = f"; above {MAX_BF16_SHARE:.0%} the ceiling was under-measured" if share > MAX_BF16_SHARE else ""
    return Verdict(
        name,
        share,
        f">= {MIN_BF16_SHARE} and <= {MAX_BF16_SHARE}",
        ok,
        f"{verdict} {where}: {achieved:.0f} GFLOP/s = {share:.0%} of the bf16 ceiling {ceiling:.0f} GFLOP/s "
        f"({seconds * 1e3:.1f} ms/slice); needs >= {MIN_BF16_SHARE:.0%}{tail}. Measured: {ceilings.describe()}",
    )
