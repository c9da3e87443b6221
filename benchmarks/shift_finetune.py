"""Issue 20: fine-tuning the demo UNet for acquisition shift - the short probe and the evaluation.

    python benchmarks/shift_finetune.py probe --steps 40 --out DIR
    python benchmarks/shift_finetune.py eval MODEL.onnx [MODEL.onnx ...] [--cases all|NAME ...]
    python benchmarks/shift_finetune.py mix FINETUNED.pth.tar --alpha A --out MIXED.pth.tar

``probe``: from ``checkpoints/unet.pth.tar``, a few configurations of the same fine-tuning step count
on the same slices (training phantoms 1..8, 8 x steps slices drawn once), each validated on phantom
100 (un-augmented, at the model input: the trainer's ``validate``) and on the same slices with a
gamma 0.6 contrast. It measures what each trainer option does to the baseline after a few dozen
steps, before a long run is spent on one recipe. Prints one JSON line per configuration.

``eval``: for each ONNX file, the held-out phantoms 200 and 201 through the runtime pipeline (the
model card's measurement, ``export.demo_models.evaluate_model``) and the acquisition-shift suite's
cases (``test_bench_shift.CASES``, the suite's own scan builder and metrics) through ``Segmenter``.
Prints one JSON line per file and a markdown table.

``mix``: the weights ``(1 - A) x start + A x fine-tuned`` (start = ``checkpoints/unet.pth.tar``),
with the fine-tuned checkpoint's other entries and ``"mixed_from"`` recording both files' SHA-256
and ``A``. Interpolating between a model and its fine-tuned copy often keeps most of the new
robustness with less loss on the original data; the BatchNorm layers are frozen identities here,
so the mixture is a plain average of the same function's parameters.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

START = ROOT / "checkpoints" / "unet.pth.tar"
FEATURES = (16, 32, 64, 128)


def _probe(args) -> int:
    import torch

    from limbseg_rt.export.augment import SHIFT_ZOOM, AppearanceSpec, AugmentSpec
    from limbseg_rt.export.datasets import SliceDataset, SubjectSlices, phantom_subject
    from limbseg_rt.export.train import TrainConfig, train, validate
    from limbseg_rt.models import create_model, load_checkpoint

    t0 = time.time()
    subjects = [phantom_subject(s, resampling="antialias") for s in range(1, 9)]
    pool = SliceDataset(subjects)
    pick = np.random.default_rng(0).choice(len(pool), size=8 * args.steps, replace=False)
    data = SliceDataset([SubjectSlices("probe", pool.images[pick], pool.labels[pick], pool.positions[pick])])
    val = phantom_subject(100, resampling="antialias")
    val_data = SliceDataset([val])
    gamma = SliceDataset([dataclasses.replace(val, images=val.images**0.6)])
    print(f"loaded in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)

    def measure(path):
        model = create_model("unet", features=FEATURES)
        load_checkpoint(model, path)
        torch.set_num_threads(2)
        v = validate(model, "unet", val_data, classes=38)
        g = validate(model, "unet", gamma, classes=38)
        return {"val_loss": round(v[0], 5), "val_dice": round(v[1], 4), "gamma_loss": round(g[0], 5),
                "gamma_dice": round(g[1], 4)}  # fmt: skip

    print(json.dumps({"config": "start", **measure(START)}), flush=True)
    base = dict(
        arch="unet",
        features=FEATURES,
        epochs=1,
        batch_size=8,
        lr=args.lr,
        seed=args.seed,
        channels_last=True,
        bf16=True,
        loss="ce+dice",
        class_balanced=0.5,
        resampling="antialias",
        freeze_batchnorm=True,
        appearance=AppearanceSpec(),
        augment=AugmentSpec(max_rotation_deg=10.0, crop_hw=(112, 96), zoom=SHIFT_ZOOM),
    )
    configs = {
        "old (every sample shifted, no warm-up, no anchor)": {},
        "shift-prob 0.5": {"shift_prob": 0.5},
        f"warmup {args.steps // 2}": {"warmup_steps": args.steps // 2},
        "distill 1": {"distill_weight": 1.0},
        "no shift augmentation": {
            "appearance": AppearanceSpec(0.0, p_gamma=0.0, p_window=0.0, p_bias=0.0),
            "augment": AugmentSpec(max_rotation_deg=10.0, crop_hw=(112, 96)),
        },  # fmt: skip
    }
    wanted = set(args.only) if args.only else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start_sd = torch.load(START, weights_only=True)["state_dict"]
    for i, (name, extra) in enumerate(configs.items()):
        if wanted and str(i) not in wanted:
            continue
        t = time.time()
        path = out / f"probe{i}.pth.tar"
        train(TrainConfig(**{**base, **extra}), data, None, path, resume=START)
        sd = torch.load(path, weights_only=True)["state_dict"]
        moved = {
            k: float((sd[k] - start_sd[k]).norm() / start_sd[k].norm().clamp_min(1e-12))
            for k in sd
            if k.endswith("weight") and sd[k].ndim == 4
        }
        row = {"config": name, "steps": args.steps, "lr": args.lr, **measure(path)}
        row["rel_weight_change_median"] = round(float(np.median(list(moved.values()))), 5)
        row["rel_weight_change_max"] = round(max(moved.values()), 5)
        row["seconds"] = round(time.time() - t, 1)
        print(json.dumps(row), flush=True)
    return 0


def _eval(args) -> int:
    from test_bench_shift import CASES, _scan

    from limbseg_rt.export.demo_models import evaluate_model
    from limbseg_rt.runtime.api import Segmenter
    from limbseg_rt.runtime.report.metrics import evaluate_labels

    cases = CASES if args.cases == ["all"] else [c for c in CASES if c.name in args.cases or c.name == "baseline"]
    table = {}
    for model in args.models:
        path = Path(model)
        t = time.time()
        held = evaluate_model(path, (200, 201))
        row = {
            "model": str(path),
            "heldout_dsc": round(held["mean"]["dsc"], 4),
            "heldout_per_seed": {s: round(v["dsc"], 4) for s, v in held["seeds"].items()},
            "heldout_abs_rve": round(held["mean"]["abs_rve_percent"], 2),
            "heldout_hd95_mm": round(held["mean"]["hd95_mm"], 2),
        }
        shift = {}
        with Segmenter(path, provider="cpu", threads=2) as seg:
            for case in cases:
                img, truth, limb_range = _scan(case)
                use_range = limb_range if seg.metadata.needs_position else None
                pred = np.asarray(seg.segment(img, limb_range=use_range).labels.dataobj)
                ids = [int(i) for i in np.unique(truth) if i]
                ev = evaluate_labels(pred, truth, spacing=case.spacing, label_ids=ids)
                shift[case.name] = round(float(ev.mean.dsc), 4)
                print(f"{path.name}: {case.name}: {shift[case.name]:.4f}", file=sys.stderr, flush=True)
        row["shift_dsc"] = shift
        row["seconds"] = round(time.time() - t, 1)
        table[path.name] = row
        print(json.dumps(row), flush=True)
    names = list(table)
    print("\n| case | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    print("| held-out 200, 201 (mean DSC) | " + " | ".join(f"{table[n]['heldout_dsc']:.3f}" for n in names) + " |")
    for case in cases:
        print(f"| {case.name} | " + " | ".join(f"{table[n]['shift_dsc'][case.name]:.3f}" for n in names) + " |")
    return 0


def _mix(args) -> int:
    import torch

    from limbseg_rt.runtime.hashing import sha256_file

    start = torch.load(START, weights_only=True)
    tuned = torch.load(args.finetuned, weights_only=True)
    a = float(args.alpha)
    mixed = {}
    for k, v in tuned["state_dict"].items():
        w = start["state_dict"][k]
        mixed[k] = ((1 - a) * w.double() + a * v.double()).to(v.dtype) if v.is_floating_point() else v
    out = {**tuned, "state_dict": mixed, "optimizer": None}
    out["mixed_from"] = {
        "start": START.name,
        "start_sha256": sha256_file(START),
        "finetuned": Path(args.finetuned).name,
        "finetuned_sha256": sha256_file(args.finetuned),
        "alpha": a,
    }
    torch.save(out, args.out)
    print(json.dumps(out["mixed_from"]))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("probe")
    pr.add_argument("--steps", type=int, default=40)
    pr.add_argument("--lr", type=float, default=5e-5)
    pr.add_argument("--seed", type=int, default=21)
    pr.add_argument("--out", required=True)
    pr.add_argument("--only", nargs="+", default=None, help="configuration numbers to run (default all)")
    ev = sub.add_parser("eval")
    ev.add_argument("models", nargs="+")
    ev.add_argument("--cases", nargs="+", default=["all"])
    mx = sub.add_parser("mix")
    mx.add_argument("finetuned")
    mx.add_argument("--alpha", type=float, required=True)
    mx.add_argument("--out", required=True)
    args = p.parse_args(argv)
    return {"probe": _probe, "eval": _eval, "mix": _mix}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
