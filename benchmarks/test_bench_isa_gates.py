"""The ISA-aware auto-config gates on recorded runs of other machines (``fixtures/auto_run_*.json``,
each with the command and date that made it): every gate can pass and fail on an AVX2-only and on
an AVX-512 VNNI machine, and an implausible ceiling is refused instead of judged. Pure arithmetic:
runs in every mode in a fraction of a second."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from _ceilings import Ceilings
from _isa_gates import AutoRun, judge_auto_config

from limbseg_rt.runtime.engine.cpu import FLAGS, parse_cpuinfo

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _load(name: str) -> AutoRun:
    return AutoRun.from_dict(json.loads((FIXTURES / name).read_text()))


def _by_name(verdicts):
    return {v.name.rsplit(") ", 1)[-1]: v for v in verdicts}


def _with_int8(run: AutoRun, **int8) -> AutoRun:
    return dataclasses.replace(run, ceilings=dataclasses.replace(run.ceilings, int8=int8))


def test_cpuinfo_flags_give_the_isa_class():
    by_name = {v: k for k, v in FLAGS.items()}
    for fixture, isa in (("auto_run_epyc_avx2.json", "avx2"), ("auto_run_zen4_avx512vnni.json", "avx512-vnni")):
        rec = json.loads((FIXTURES / fixture).read_text())["cpu"]
        text = (
            f"processor\t: 0\nmodel name\t: {rec['model']}\n"
            f"flags\t\t: fpu sse2 {' '.join(by_name[f] for f in rec['flags'])} popcnt\n"
        )
        info = parse_cpuinfo(text, cores=2)
        assert info.isa == isa and info.model == rec["model"]
    assert parse_cpuinfo("flags : sse2 avx2 fma amx_int8 amx_tile\n", 2).isa == "amx"
    assert parse_cpuinfo("flags : sse2\n", 2).isa == "baseline"


def test_avx2_recorded_run_is_refused_not_passed():
    """The AVX2 machine's only int8 ceiling was torch._int_mm at 1 GOPS: the old gate passed at a
    share of 17,520 %; now no gate is judged and the run fails saying why."""
    run = _load("auto_run_epyc_avx2.json")
    assert run.achieved_gops / 1.0 > 100  # what the old gate called its share of the ceiling
    (v,) = judge_auto_config(run)
    assert not v.passed
    assert "GATE NOT JUDGED [avx2" in v.message and "no plausible int8 ceiling" in v.message
    assert "torch-int-mm 1 GOPS" in v.message


@pytest.mark.parametrize("ceiling, passes", [(250.0, True), (700.0, False)])
def test_avx2_gates_pass_and_fail_with_a_plausible_ceiling(ceiling, passes):
    """That run measured no ONNX Runtime int8 ceiling, so these two values are hypothetical: 250
    GOPS (OpenVINO's 248 GOPS would be 99 % of it; 1.0x required) passes both gates at the
    recorded 2.49x; 700 fails both (35 % share; 2.8x required)."""
    run = _with_int8(_load("auto_run_epyc_avx2.json"), **{"ort-u8s8": ceiling})
    verdicts = _by_name(judge_auto_config(run))
    assert set(verdicts) == {"share of int8 ceiling", "vs PyTorch eager fp32"}
    for v in verdicts.values():
        assert v.passed is passes, v.message
        assert "[avx2: AMD EPYC]" in v.message
        assert "expected on VNNI" not in v.message  # the 4x expectation is for VNNI machines only
    assert verdicts["vs PyTorch eager fp32"].value == pytest.approx(964.0 / 387.6)


def test_zen4_recorded_run_under_measured_ceiling_is_refused():
    """OpenVINO int8 reached 821 GOPS there, above both GEMM ceilings measured (767 and 720): a share
    over 105 % says the ceiling was under-measured, and the gate refuses it."""
    verdicts = _by_name(judge_auto_config(_load("auto_run_zen4_avx512vnni.json")))
    share = verdicts["share of int8 ceiling"]
    assert not share.passed and share.value > 1.05 and "under-measured" in share.message
    speed = verdicts["vs PyTorch eager fp32"]
    assert speed.passed, speed.message  # 4.65x against 0.6 x 767 / 194 = 2.37x
    assert "[avx512-vnni" in speed.message and "expected on VNNI machines: >= 4.0x" in speed.message


def test_zen4_gates_pass_and_fail():
    """With the VNNI register-loop peak recorded the same day (925 GOPS) both gates pass; the same
    machine with the engine twice as slow fails both."""
    run = _with_int8(_load("auto_run_zen4_avx512vnni.json"), **{"vnni-register-loop": 925.0})
    assert all(v.passed for v in judge_auto_config(run)), [v.message for v in judge_auto_config(run)]
    slow = dataclasses.replace(run, cand_s=run.cand_s * 2)
    failed = [v for v in judge_auto_config(slow) if not v.passed]
    assert len(failed) == 2 and all("GATE MISSED [avx512-vnni" in v.message for v in failed)


def test_this_projects_machine_recorded_run():
    """A full run on the project's current machine kind (Zen 5, AVX-512 VNNI), recorded with
    ``--record-auto-run``: the verdicts it got, and a failure when the engine is 2x slower."""
    path = FIXTURES / "auto_run_zen5_avx512vnni.json"
    if not path.is_file():
        pytest.skip("no recorded Zen 5 run in benchmarks/fixtures/")
    run = _load(path.name)
    assert run.cpu.isa == "avx512-vnni"
    assert not run.ceilings.problems()
    assert all(v.passed for v in judge_auto_config(run)), [v.message for v in judge_auto_config(run)]
    slow = dataclasses.replace(run, cand_s=run.cand_s * 3)
    assert not any(v.passed for v in judge_auto_config(slow))


def test_fp32_ceiling_missing_is_refused():
    run = dataclasses.replace(_load("auto_run_epyc_avx2.json"), ceilings=Ceilings(fp32={}, int8={"ort-u8s8": 300.0}))
    (v,) = judge_auto_config(run)
    assert not v.passed and "no fp32 ceiling" in v.message


def test_amx_recorded_run_judged_on_the_best_of_start_and_interleaved_ceilings():
    """The AMX Xeon's interleaved int8 GEMMs (1154 GOPS best) fell to a third of the same GEMM at the
    run's start (3096): judged on the interleaved value alone the share is 148 % and refused; on the
    best of both it is 55 %, which passes the AMX threshold (45 %) and would miss the general 75 %."""
    run = _load("auto_run_xeon_amx.json")
    alone = _by_name(judge_auto_config(dataclasses.replace(run, start_ceilings=None)))
    assert not alone["share of int8 ceiling"].passed and "under-measured" in alone["share of int8 ceiling"].message
    verdicts = _by_name(judge_auto_config(run))
    share = verdicts["share of int8 ceiling"]
    assert share.passed and 0.50 < share.value < 0.60, share.message
    assert "3096 GOPS" in share.message and "[amx" in share.message and "AMX threshold" in share.message
    assert share.value < 0.75  # the general threshold would fail this machine
    assert verdicts["vs PyTorch eager fp32"].passed, verdicts["vs PyTorch eager fp32"].message


def test_amx_gates_fail_when_the_engine_loses_its_amx_path():
    """An engine at a VNNI-like quarter of the recorded speed fails both gates on the same machine."""
    slow = dataclasses.replace(_load("auto_run_xeon_amx.json"), cand_s=_load("auto_run_xeon_amx.json").cand_s * 4)
    failed = [v for v in judge_auto_config(slow) if not v.passed]
    assert len(failed) == 2 and all("GATE MISSED [amx" in v.message for v in failed)


def test_best_of_takes_each_sources_peak_and_keeps_unmeasured_reasons_only():
    a = Ceilings(fp32={"numpy-sgemm": 200.0}, int8={"ort-u8s8": 600.0}, errors={"openvino-int8": "absent"})
    b = Ceilings(fp32={"numpy-sgemm": 150.0, "ort-fp32": 210.0}, int8={"ort-u8s8": 900.0, "openvino-int8": 950.0})
    best = a.best_of(b)
    assert best.fp32 == {"numpy-sgemm": 200.0, "ort-fp32": 210.0}
    assert best.int8 == {"ort-u8s8": 900.0, "openvino-int8": 950.0}
    assert best.errors == {}  # openvino-int8 was measured in b
    assert a.best_of(None) is a


def test_bf16_gate_passes_fails_and_refuses_on_this_projects_cpu():
    """The bf16 judge on the Zen 5 record's CPU with bf16 ceilings of the size measured there
    (about 400 GFLOP/s): a paper UNet (48.1 G MACs) at 160 ms/slice is 601 GFLOP/s, 150 % of the
    ceiling, so refused; at 300 ms it is 80 % (pass); at 800 ms 30 % (miss); at 220 ms, 109 %, as
    recorded on Zen 5 (convolutions beat the GEMMs), still passes; with no bf16 source, or one below
    the fp32 ceiling, nothing is judged."""
    from _isa_gates import judge_bf16

    run = _load("auto_run_zen5_avx512vnni.json")
    c = dataclasses.replace(run.ceilings, bf16={"openvino-bf16": 400.0})
    macs = 48_058_617_560
    ok = judge_bf16(run.cpu, c, "unet", macs, 0.300, "openvino-runtime bf16")
    assert ok.passed and ok.value == pytest.approx(2 * macs / 0.3 / 1e9 / 400.0) and "[avx512-vnni" in ok.message
    miss = judge_bf16(run.cpu, c, "unet", macs, 0.800, "openvino-runtime bf16")
    assert not miss.passed and "GATE MISSED" in miss.message
    assert judge_bf16(run.cpu, c, "unet", macs, 0.220, "openvino-runtime bf16").passed
    over = judge_bf16(run.cpu, c, "unet", macs, 0.160, "openvino-runtime bf16")
    assert not over.passed and "under-measured" in over.message
    for bad in ({}, {"openvino-bf16": 10.0}):
        v = judge_bf16(run.cpu, dataclasses.replace(run.ceilings, bf16=bad), "unet", macs, 0.3, "x")
        assert not v.passed and "GATE NOT JUDGED" in v.message
