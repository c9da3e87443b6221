"""The demo models inside the package: size budget, metadata, recorded parity, and the model card's
held-out accuracy re-measured through the public API."""

from __future__ import annotations

import re

import numpy as np
import pytest

from limbseg_rt.runtime.hashing import sha256_file
from limbseg_rt.runtime.model.bundled import MODELS_DIR, list_bundled
from limbseg_rt.runtime.model.metadata import ARCHITECTURES, read_metadata

SHIPPED = list_bundled()
INT8_SHIPPED = [m for m in SHIPPED if m.precision == "int8"]
SIZE_BUDGET_BYTES = 16 * 1000 * 1000  # the export issue's 16 MB for all shipped model files
HELDOUT_SEEDS = (200, 201)  # the cards' evaluation subjects; never used in training or validation
DEMO_DSC_GOAL = 0.90  # the export issue's bar: mean per-muscle DSC on held-out phantoms


def _card(arch: str) -> str:
    path = MODELS_DIR / f"{arch}.md"
    assert path.is_file(), f"{path.name}: every shipped model needs a model card"
    return path.read_text()


def test_the_package_ships_the_default_unet_and_stays_in_the_size_budget():
    assert any(m.arch == "unet" and m.precision == "fp32" for m in SHIPPED)
    assert {m.arch for m in SHIPPED} == set(ARCHITECTURES), "every architecture has a bundled demo model"
    total = sum(m.size_bytes for m in SHIPPED)
    assert total <= SIZE_BUDGET_BYTES, f"shipped models take {total / 1e6:.2f} MB > 16 MB"
    # Nothing else with an .onnx suffix hides in the folder.
    assert sorted(p.name for p in MODELS_DIR.glob("*.onnx")) == sorted(m.path.name for m in SHIPPED)


@pytest.mark.parametrize("model", SHIPPED, ids=lambda m: m.path.name)
def test_metadata_matches_the_file_name_and_its_parity_record_passed(model):
    md = read_metadata(model.path)
    assert (md.architecture, md.precision) == (model.arch, model.precision)
    assert md.input_hw == (272, 240) and len(md.labels) == 38
    assert re.fullmatch(r"[0-9a-f]{64}", md.checkpoint_sha256)
    parity = md.parity
    assert parity["passed"] is True and parity["precision"] == model.precision
    assert parity["slices"] >= 8 and parity["source"].startswith("phantom")
    if model.precision == "fp32":
        assert parity["label_agreement"] >= 0.9999
    elif model.precision == "int8":
        assert parity["min_muscle_dice"] >= 0.97
    card = _card(model.arch)
    assert "Not for real scans" in card
    # The card describes this very file and the checkpoint it came from.
    assert sha256_file(model.path) in card and md.checkpoint_sha256 in card
    assert "limbseg-rt train" in card and "--seed" in card
    # ... and the repository's checkpoint to continue training from (checkpoints/README.md).
    ckpt = MODELS_DIR.parents[2] / "checkpoints" / f"{model.arch}.pth.tar"
    if ckpt.is_file():  # a source checkout (an installed wheel has no checkpoints/)
        assert f"`checkpoints/{model.arch}.pth.tar`, SHA-256 `{sha256_file(ckpt)}`" in card


@pytest.fixture(scope="module")
def heldout_phantoms():
    from limbseg_rt.runtime.phantom.generate import make_phantom

    return {seed: make_phantom(seed, slices=150, shape=(256, 256)) for seed in HELDOUT_SEEDS}


@pytest.mark.parametrize("model", SHIPPED, ids=lambda m: m.path.name)
def test_the_card_accuracy_reproduces_through_the_public_api(model, heldout_phantoms):
    from limbseg_rt.runtime.api import Segmenter
    from limbseg_rt.runtime.report.metrics import evaluate_labels

    row = re.search(rf"^\| {re.escape(model.path.name)} \| 200, 201 \| ([0-9.]+) \|", _card(model.arch), re.M)
    assert row, f"{model.arch}.md has no held-out DSC row for {model.path.name}"
    claimed = float(row.group(1))
    scores = []
    with Segmenter(model.path, provider="cpu", threads=2) as seg:
        for image, truth in heldout_phantoms.values():
            result = seg.segment(image)
            ref = np.rint(np.asarray(truth.dataobj)).astype(np.uint8)
            labels = np.asarray(result.labels.dataobj)
            assert labels.shape == ref.shape and np.allclose(result.labels.affine, image.affine)
            spacing = tuple(float(v) for v in image.header.get_zooms()[:3])
            scores.append(evaluate_labels(labels, ref, spacing=spacing, labels=seg.metadata.labels).mean.dsc)
    measured = float(np.mean(scores))
    assert measured == pytest.approx(claimed, abs=0.0015)
    assert measured >= DEMO_DSC_GOAL, f"{model.path.name}: held-out DSC {measured:.4f} under the goal {DEMO_DSC_GOAL}"


CLEANUP_ROW = r"^\| {name}, {labels} \| 200, 201 \| ([0-9.]+) \| (-?[0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|$"
CLEANUP_FIELDS = ("dsc", "rve_percent", "abs_rve_percent", "hd_mm", "hd95_mm", "assd_mm")


def _cleanup_rows(model) -> dict:
    """The card's clean-up table for ``model``: ``{"as predicted": {...}, "cleaned": {...}}``."""
    card = _card(model.arch)
    assert "## 3D clean-up (`run --analysis`)" in card, f"{model.arch}.md has no clean-up section"
    rows = {}
    for labels in ("as predicted", "cleaned"):
        m = re.search(CLEANUP_ROW.format(name=re.escape(model.path.name), labels=labels), card, re.M)
        assert m, f"{model.arch}.md has no clean-up row '{model.path.name}, {labels}'"
        rows[labels] = dict(zip(CLEANUP_FIELDS, map(float, m.groups())))
    return rows


@pytest.mark.parametrize("model", INT8_SHIPPED, ids=lambda m: m.path.name)
def test_each_card_shows_a_clean_up_that_cuts_hd_and_worsens_nothing(model):
    """Issue 19: every card has the clean-up's effect (benchmarks/cleanup_effect.py), and the table
    says what docs/analysis.md claims: mean HD and |RVE| down; HD95, ASSD and DSC no worse."""
    rows = _cleanup_rows(model)
    raw, clean = rows["as predicted"], rows["cleaned"]
    assert clean["hd_mm"] < raw["hd_mm"] and abs(clean["rve_percent"]) <= abs(raw["rve_percent"])
    assert clean["abs_rve_percent"] <= raw["abs_rve_percent"]
    assert clean["hd95_mm"] <= raw["hd95_mm"] and clean["assd_mm"] <= raw["assd_mm"] and clean["dsc"] >= raw["dsc"]


@pytest.mark.parametrize("model", INT8_SHIPPED, ids=lambda m: m.path.name)
def test_the_card_clean_up_rows_reproduce(model, heldout_phantoms):
    """The clean-up rows re-measured through the runtime: segment, assign sides, clean, evaluate."""
    pytest.importorskip("cc3d")
    from limbseg_rt.runtime.analysis.cleanup import clean_labels
    from limbseg_rt.runtime.analysis.sides import assign_sides
    from limbseg_rt.runtime.api import Segmenter
    from limbseg_rt.runtime.report.metrics import evaluate_labels

    rows = _cleanup_rows(model)
    got: dict = {"as predicted": [], "cleaned": []}
    with Segmenter(model.path, provider="cpu", threads=2) as seg:
        for image, truth in heldout_phantoms.values():  # stored RAS: the arrays are canonical
            pred = np.asarray(seg.segment(image).labels.dataobj).astype(np.uint8)
            ref = np.rint(np.asarray(truth.dataobj)).astype(np.uint8)
            img = np.asarray(image.dataobj, np.float32)
            spacing = tuple(float(v) for v in image.header.get_zooms()[:3])
            sides = assign_sides(pred, img, spacing, seg.metadata.labels).sides
            cleaned = clean_labels(pred, sides, spacing=spacing).labels
            for labels, lab in (("as predicted", pred), ("cleaned", cleaned)):
                got[labels].append(evaluate_labels(lab, ref, spacing=spacing, labels=seg.metadata.labels).mean)
    for labels, means in got.items():
        claimed = rows[labels]
        assert float(np.mean([m.dsc for m in means])) == pytest.approx(claimed["dsc"], abs=0.0015)
        assert float(np.mean([m.hd_mm for m in means])) == pytest.approx(claimed["hd_mm"], abs=0.5)
        assert float(np.mean([m.hd95_mm for m in means])) == pytest.approx(claimed["hd95_mm"], abs=0.1)


def test_sc_unet_needs_its_true_slice_positions():
    """The card's position check, re-measured: the bundled SC-UNet fed a random permutation of the
    volume's positions loses DSC, so its position input measurably matters."""
    from limbseg_rt.export.demo_models import evaluate_model  # the cards' own measurement (runtime only, no torch)

    (model,) = [m for m in SHIPPED if m.arch == "sc-unet"]
    check = re.search(
        rf"^Position input check \({re.escape(model.path.name)}\): mean DSC with true positions "
        r"([0-9.]+), with shuffled positions ([0-9.]+)\.$",
        _card("sc-unet"),
        re.M,
    )
    assert check, "sc-unet.md has no position input check for the shipped file"
    true_dsc, shuffled_dsc = float(check.group(1)), float(check.group(2))
    measured = evaluate_model(model.path, HELDOUT_SEEDS, shuffle_positions=True)["mean"]["dsc"]
    assert measured == pytest.approx(shuffled_dsc, abs=0.0015)
    assert true_dsc - measured >= 0.01


@pytest.mark.parametrize("model", INT8_SHIPPED, ids=lambda m: m.path.name)
def test_int8_files_keep_in_float_exactly_the_convolutions_their_metadata_lists(model):
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(model.path))
    dequantised = {n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    float_convs = {n.name for n in convs if n.input[1] not in dequantised}
    conversion = read_metadata(model.path).parity["conversion"]
    listed = set(conversion["fp32_nodes"])
    assert float_convs and float_convs <= listed
    assert conversion["quantized_nodes"]["Conv"] == f"{len(convs) - len(float_convs)}/{len(convs)}"
