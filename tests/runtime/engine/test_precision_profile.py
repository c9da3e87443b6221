"""--precision auto: measured choice from `limbseg-rt tune`, the rule otherwise, bf16 only where it runs."""

from __future__ import annotations

import json

import pytest

from limbseg_rt.runtime.engine import precision_profile as pp
from limbseg_rt.runtime.engine import runners
from limbseg_rt.runtime.engine.cpu import CpuInfo, detect
from limbseg_rt.runtime.errors import ProviderError
from limbseg_rt.runtime.model.bundled import bundled_files

AVX2 = CpuInfo("test AVX2 CPU", 2, frozenset({"avx2", "fma"}))
AMX = CpuInfo(
    "test AMX CPU", 2, frozenset({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16"})
)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIMBSEG_RT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / pp.PROFILE_NAME


def _entry(precision, files, cpu, measured=None):
    measured = measured or {
        "fp32": {"s_per_slice": 0.1, "agreement": 1.0},
        "int8": {"s_per_slice": 0.05, "agreement": 0.99},
    }
    return {
        pp.entry_key("cpu", "unet"): {
            "precision": precision,
            "measured": measured,
            "signature": pp.signature(files, cpu),
            "tuned_at": "then",
            "min_agreement": pp.MIN_AGREEMENT,
        }
    }


def test_pick_takes_the_fastest_that_agrees():
    measured = {
        "fp32": {"s_per_slice": 0.10, "agreement": 1.0},
        "int8": {"s_per_slice": 0.05, "agreement": 0.96},  # fast but below the bar
        "bf16": {"s_per_slice": 0.07, "agreement": 0.99},
    }
    assert pp.pick(measured) == "bf16"
    measured["bf16"]["agreement"] = 0.5
    assert pp.pick(measured) == "fp32"
    measured["int8"]["agreement"] = 0.98
    assert pp.pick(measured) == "int8"


def test_no_profile_means_the_rule_and_says_so(cache):
    _, files = bundled_files("unet")
    choice = pp.auto_precision("cpu", "unet", files, cpu=AVX2)
    assert (choice.precision, choice.how) == ("int8", "rule")
    assert "not measured" in choice.why and "limbseg-rt tune" in choice.why and "avx2" in choice.why
    # only one file bundled: no choice to make, and the reason says that instead of a tune hint
    only = pp.auto_precision("cpu", "sc-unet", bundled_files("sc-unet")[1], cpu=AVX2)
    assert only.precision == "int8" and "only int8 is bundled" in only.why and "tune" not in only.why
    assert pp.auto_precision("cuda", "unet", files, cpu=AVX2).precision == "fp32"


def test_a_matching_entry_is_used_and_a_stale_one_is_not(cache):
    _, files = bundled_files("unet")
    profile = _entry("fp32", files, AVX2)  # a measurement that found fp32 best on this CPU
    choice = pp.auto_precision("cpu", "unet", files, profile=profile, cpu=AVX2)
    assert (choice.precision, choice.how) == ("fp32", "measured")
    assert choice.measured["int8"]["s_per_slice"] == 0.05
    other_cpu = pp.auto_precision("cpu", "unet", files, profile=profile, cpu=AMX)
    assert other_cpu.how == "rule" and "stale" in other_cpu.why and "flags" in other_cpu.why
    fewer_cores = CpuInfo(AVX2.model, 1, AVX2.flags)
    assert pp.auto_precision("cpu", "unet", files, profile=profile, cpu=fewer_cores).how == "rule"
    profile[pp.entry_key("cpu", "unet")]["signature"]["files"]["fp32"] = "0" * 64  # the file was replaced
    replaced = pp.auto_precision("cpu", "unet", files, profile=profile, cpu=AVX2)
    assert replaced.how == "rule" and "files" in replaced.why


def test_profile_file_is_merged_atomically_and_garbage_is_ignored(cache):
    assert pp.load_profile() == {}
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert pp.load_profile() == {}
    pp.save_entries({"cpu/unet": {"precision": "int8"}})
    pp.save_entries({"openvino/unet": {"precision": "bf16"}})
    assert set(json.loads(cache.read_text())["entries"]) == {"cpu/unet", "openvino/unet"}
    assert [p.name for p in cache.parent.iterdir()] == [pp.PROFILE_NAME]  # no temporaries left


def test_tune_then_auto_runs_the_measured_choice(cache):
    from limbseg_rt.runtime.api import Segmenter
    from limbseg_rt.runtime.tuning import tune

    (result,) = tune(("unet",), ["cpu"], slices=4, repeats=1)
    assert set(result.measured) == {"fp32", "int8"}
    assert result.measured["fp32"]["agreement"] == 1.0
    assert 0.9 < result.measured["int8"]["agreement"] <= 1.0
    entry = json.loads(cache.read_text())["entries"]["cpu/unet"]
    assert entry["precision"] == result.chosen
    with Segmenter("unet", provider="cpu") as seg:
        choice = seg.describe()["precision_choice"]
        assert (choice["chose"], choice["how"]) == (result.chosen, "measured")
        assert seg.precision == result.chosen  # read back from the engine, not from the profile


def test_bf16_is_refused_where_it_cannot_run(monkeypatch):
    with pytest.raises(ProviderError, match="only on the OpenVINO runtime engine"):
        runners.create_runner("unet", provider="cpu", precision="bf16")
    monkeypatch.setattr(runners, "detect", lambda: AVX2)
    with pytest.raises(ProviderError, match="no bf16 instructions.*avx2"):
        runners.create_runner(
            "unet", provider="openvino", precision="bf16", available=["CPUExecutionProvider", "openvino-runtime"]
        )


def test_bf16_on_openvino_reads_back_bf16():
    pytest.importorskip("openvino")
    if not pp.has_bf16(detect()):
        pytest.skip("this CPU has no AVX512-BF16/AMX-BF16")
    runner = runners.create_runner("unet", provider="openvino", precision="bf16")
    try:
        assert runner.precision == "bf16"
        assert runner.describe()["compile_config"]["INFERENCE_PRECISION_HINT"] == "bf16"
    finally:
        runner.close()
