"""Accuracy of every engine x precision on the same phantom volume.

Random-weight networks: labels vs the PyTorch eager fp32 reference (fp32 engines gated at >= 99.99 %
label agreement; reduced precision reported only, random weights have tiny logit margins).
Trained demo models: labels vs the fp32 ONNX model on ONNX Runtime CPU (the demo models ship without
PyTorch weights; the fp32 file's own parity with PyTorch is recorded in its metadata), int8 gated at
per-muscle Dice >= 0.98 and OpenVINO bf16 at >= 0.97; and the paper's metrics (DSC, RVE, HD) of the end-to-end result vs the
phantom's ground truth.
"""

from __future__ import annotations

import numpy as np
import pytest
from _harness import gate_at_least, in_batches, label_agreement, muscle_dice, muscle_rve

FP32_MIN_AGREEMENT = 0.9999
INT8_MIN_DICE = 0.98
# bf16 is no export of ours (the OpenVINO engine compiles the fp32 file in bf16), so it has no export
# parity gate; it gets the bar `limbseg-rt tune` sets before choosing it (MIN_AGREEMENT, a mean Dice),
# here applied to the worst muscle. Measured on the demo UNet (Zen 5, 2026-12-03): 0.982.
BF16_MIN_DICE = 0.97
# Sanity floor for the demo models vs the phantom's truth: an untrained or mis-preprocessed model scores
# ~0.0-0.05; the demo models score about 0.90 on held-out subjects (their model cards). Not the paper's target.
DEMO_MIN_GT_DSC = 0.5
PHANTOM_SEED = 7301  # not a calibration/held-out seed of export/parity_data.py


def _compare(results, model, eng, ref_labels, labels, reference: str, classes: int = 38) -> dict:
    dice = muscle_dice(labels, ref_labels, classes)
    rve = muscle_rve(labels, ref_labels, classes)
    rec = {
        "model": model,
        "engine": eng.label,
        "precision": eng.precision,
        "reference": reference,
        "agreement": label_agreement(labels, ref_labels),
        "min_dice": min(dice.values()) if dice else None,
        "max_abs_rve": max(abs(v) for v in rve.values()) if rve else None,
        "muscles_judged": len(dice),
    }
    results.accuracy.append(rec)
    results.set_accuracy(model, eng.label, eng.precision, agreement=rec["agreement"], min_muscle_dice=rec["min_dice"])
    return rec


def test_agreement_vs_pytorch(bench, results, full_run, model_name, engine_key):
    if engine_key[0] == "pytorch":
        pytest.skip("the reference itself")
    m = bench.model(model_name)
    eng = bench.engine(model_name, engine_key)
    images, positions, _ = bench.phantom_slices(m.hw, 8 if full_run else 12, PHANTOM_SEED)
    pos = positions if m.needs_position else None
    ref = in_batches(bench.engine(model_name, ("pytorch", "fp32")), images, pos, 4)
    got = in_batches(eng, images, pos, 4)
    rec = _compare(results, model_name, eng, ref, got, "pytorch-eager fp32")
    if eng.precision == "fp32":
        ok = rec["agreement"] >= FP32_MIN_AGREEMENT
        results.gate(
            f"{model_name}: {eng.label} fp32 label agreement vs PyTorch",
            rec["agreement"],
            f">= {FP32_MIN_AGREEMENT}",
            ok,
        )
        gate_at_least(
            f"{model_name}: {eng.label} fp32 label agreement vs PyTorch fp32", rec["agreement"], FP32_MIN_AGREEMENT
        )


def test_demo_accuracy(bench, results, demo_name, engine_key):
    """Trained demo model: engine vs its PyTorch checkpoint (``checkpoints/``; else vs fp32 ONNX),
    with the agreement gate for fp32 and the Dice gate for reduced precision, and vs phantom ground
    truth. SC-UNet's and Attention UNet's checkpoints hold their int8 files' weights dequantised
    (checkpoints/README.md), so their reference is the int8 model's own float counterpart."""
    m = bench.model(demo_name)
    if engine_key[0] == "pytorch" and m.checkpoint is None:
        pytest.skip("no PyTorch checkpoint of this demo model in checkpoints/")
    eng = bench.engine(demo_name, engine_key)
    images, positions, ph = bench.phantom_slices(m.hw, 40, PHANTOM_SEED)
    pos = positions if m.needs_position else None
    got = in_batches(eng, images, pos, 8)
    ref_key = ("pytorch", "fp32") if m.checkpoint is not None else ("cpu", "fp32") if "fp32" in m.paths else None
    if ref_key is not None and engine_key != ref_key:
        ref_label = "pytorch-eager fp32" if ref_key[0] == "pytorch" else "onnxruntime-cpu fp32"
        ref = in_batches(bench.engine(demo_name, ref_key), images, pos, 8)
        eng = bench.engine(demo_name, engine_key)  # the reference may have replaced it (one torch net alive)
        rec = _compare(results, demo_name, eng, ref, got, ref_label)
        if eng.precision == "fp32":
            ok = rec["agreement"] >= FP32_MIN_AGREEMENT
            results.gate(
                f"{demo_name}: {eng.label} fp32 label agreement vs {ref_label}",
                rec["agreement"],
                f">= {FP32_MIN_AGREEMENT}",
                ok,
            )
            gate_at_least(
                f"{demo_name}: {eng.label} fp32 label agreement vs {ref_label}", rec["agreement"], FP32_MIN_AGREEMENT
            )
        else:
            least = BF16_MIN_DICE if eng.precision == "bf16" else INT8_MIN_DICE
            ok = rec["min_dice"] is not None and rec["min_dice"] >= least
            results.gate(
                f"{demo_name}: {eng.label} {eng.precision} min muscle Dice vs fp32",
                rec["min_dice"] or float("nan"),
                f">= {least}",
                ok,
            )
            assert rec["muscles_judged"] > 0, "no muscle covers 100 pixels: is the demo model trained?"
            gate_at_least(
                f"{demo_name}: {eng.label} {eng.precision} minimum per-muscle Dice vs fp32", rec["min_dice"], least
            )
    _ground_truth(results, demo_name, eng, got, ph, m)


def _ground_truth(results, model, eng, labels_model_grid, ph, m) -> None:
    """Paper's metrics vs the phantom's labels: model-grid labels resized back like the pipeline does."""
    from limbseg_rt.runtime.inference.preprocess import resize_nearest
    from limbseg_rt.runtime.report.metrics import evaluate_labels

    nx, ny, nz = ph.labels.shape
    pred = np.stack([resize_nearest(labels_model_grid[k], (nx, ny)) for k in range(nz)], axis=2)
    ev = evaluate_labels(pred, np.asarray(ph.labels), spacing=ph.spacing)
    rec = {
        "model": model,
        "engine": eng.label,
        "precision": eng.precision,
        "reference": "phantom ground truth",
        "mean_dsc": ev.mean.dsc,
        "mean_rve": ev.mean.rve_percent,
        "mean_hd_mm": ev.mean.hd_mm,
        "agreement": label_agreement(pred, ph.labels),
    }
    results.accuracy.append(rec)
    # A sanity floor, not the paper's accuracy: a trained demo model that cannot reach it on a phantom is
    # broken (untrained file, preprocessing drift, orientation bug).
    gate_at_least(
        f"{model} on {eng.label} {eng.precision}: mean DSC vs phantom ground truth",
        ev.mean.dsc,
        DEMO_MIN_GT_DSC,
        detail="is the demo model trained, is preprocessing consistent?",
    )
