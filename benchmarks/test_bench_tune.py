"""``--precision auto`` decided by measurement on this CPU (issue 24): ``limbseg-rt tune`` measures the
bundled UNet's candidates (fp32, int8 and, on a CPU with a bf16 instruction, OpenVINO bf16) on each CPU
provider, and the summary records what it chose and why. The gate is that a runner built afterwards
with ``precision="auto"`` runs exactly the measured choice, read back from the engine (never claim a
precision that did not run). Both runs; the tune uses a private cache folder, so the rest of the
session still judges the stated rule."""

from __future__ import annotations

import pytest

from limbseg_rt.runtime.engine.cpu import detect


def _describe(measured: dict) -> str:
    parts = []
    for precision, m in measured.items():
        if m.get("s_per_slice") is None:
            parts.append(f"{precision}: {m.get('note', 'not run')}")
        else:
            parts.append(f"{precision} {m['s_per_slice'] * 1e3:.1f} ms/slice (agreement {m['agreement']:.3f})")
    return ", ".join(parts)


def test_tuned_choice_is_what_auto_runs(results, monkeypatch, tmp_path):
    from limbseg_rt.runtime import tuning
    from limbseg_rt.runtime.engine.runners import create_runner

    monkeypatch.setenv("LIMBSEG_RT_CACHE", str(tmp_path))
    cpu = detect()
    done = tuning.tune(archs=("unet",), slices=12, repeats=2, save=True)
    measured = [r for r in done if r.skipped is None]
    if not measured:
        pytest.skip("; ".join(f"{r.provider}: {r.skipped}" for r in done))
    for r in measured:
        runner = create_runner("unet", provider=r.provider, precision="auto")
        try:
            ran, choice = runner.precision, runner.precision_choice or {}
        finally:
            runner.close()
        ok = ran == r.chosen and choice.get("how") == "measured"
        results.gate(
            f"demo unet on {r.provider}: `limbseg-rt tune` chose {r.chosen} [{cpu.isa}]; auto then ran {ran}",
            1.0 if ok else 0.0,
            "runs the measured choice",
            ok,
            _describe(r.measured),
        )
        assert ok, (
            f"tune chose {r.chosen} on {r.provider} but --precision auto then ran {ran} "
            f"(how: {choice.get('how')}, why: {choice.get('why')})"
        )
