"""The 3D clean-up's effect on the bundled models' accuracy (docs/analysis.md, the model cards).

For each bundled int8 model and each held-out phantom (seeds 200 and 201, the model cards' seeds;
256 x 256 x 150, as ``tests/runtime/model/test_shipped_models.py``), the scan is segmented on the
CPU, the sides are assigned (``runtime.analysis.sides``), and the labels are cleaned with each rule
below. Every variant is scored against the phantom's truth with ``evaluate_labels`` (the metrics of
``limbseg-rt evaluate``); a row is the mean over the 37 muscles, then over the seeds.

    python benchmarks/cleanup_effect.py [--models unet sc-unet attention-unet] [--seeds 200 201]
        [--grid] [--cache DIR] [--json OUT.json]

``--grid`` adds the rule's parameter grid (near_mm x min_ml) that the default was chosen from;
``--cache DIR`` keeps the predictions (``DIR/<model>_<seed>.npz``) so a rerun skips inference.
Needs the ``analysis`` extra (cc3d) and scipy (the ``eval`` extra, for the surface distances).
About 2 minutes on 2 cores (most of it the surface distances of the grid).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

METRICS = ("dsc", "rve_percent", "abs_rve_percent", "hd_mm", "hd95_mm", "assd_mm")
HEADER = "| model, labels | DSC | RVE % | abs RVE % | HD mm | HD95 mm | ASSD mm | voxels removed |"


def previous_rule(labels, sides, spacing, min_fraction=0.10, near_mm=10.0):
    """The rule before issue 19's second round, for the comparison row only: keep components with
    >= 10 % of the muscle-side's largest, or whose bounding box lies within ``near_mm`` of the
    largest one's box along every axis."""
    import cc3d

    lab = np.asarray(labels)
    compound = lab.astype(np.uint16) * 4 + np.asarray(sides, np.uint16)
    compound[lab == 0] = 0
    cc, n = cc3d.connected_components(compound, connectivity=26, return_N=True)
    size = np.bincount(cc.ravel(), minlength=n + 1)
    size[0] = 0
    owner = np.zeros(n + 1, np.int64)
    owner[cc.ravel()] = compound.ravel()
    largest = np.zeros(int(owner.max()) + 1, np.int64)
    np.maximum.at(largest, owner[1:], size[1:])
    keep = size >= min_fraction * largest[owner]
    keep[0] = False
    boxes = cc3d.statistics(cc)["bounding_boxes"]
    big_of: dict = {}
    for comp in range(1, n + 1):
        if size[comp] == largest[owner[comp]]:
            big_of.setdefault(int(owner[comp]), comp)
    reach = [near_mm / float(v) for v in spacing]
    for comp in (np.flatnonzero(~keep[1:]) + 1).tolist():
        big, box = boxes[big_of[int(owner[comp])]], boxes[comp]
        gaps = [max(0, max(box[a].start, big[a].start) - min(box[a].stop, big[a].stop) + 1) for a in range(3)]
        if all(g <= r for g, r in zip(gaps, reach)):
            keep[comp] = True
    return np.where(keep[cc], lab, 0).astype(lab.dtype)


def _predict(model: str, seed: int, cache: Path | None):
    from limbseg_rt.runtime.api import Segmenter
    from limbseg_rt.runtime.model.bundled import MODELS_DIR
    from limbseg_rt.runtime.phantom.generate import make_phantom

    image, truth = make_phantom(seed, slices=150, shape=(256, 256))  # stored RAS: arrays are canonical
    img = np.asarray(image.dataobj, np.float32)
    ref = np.rint(np.asarray(truth.dataobj)).astype(np.uint8)
    spacing = tuple(float(v) for v in image.header.get_zooms()[:3])
    path = cache / f"{model}-int8_{seed}.npz" if cache else None
    if path is not None and path.is_file():
        pred = np.load(path)["pred"]
    else:
        with Segmenter(MODELS_DIR / f"{model}-int8.onnx", provider="cpu", precision="int8", threads=2) as seg:
            pred = np.asarray(seg.segment(image).labels.dataobj).astype(np.uint8)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path, pred=pred)
    return img, ref, pred, spacing


class Scorer:
    """Per-label metrics of one case; a variant re-evaluates only the labels it changed."""

    def __init__(self, pred, ref, spacing, table):
        from limbseg_rt.runtime.report.metrics import evaluate_labels

        self._eval = evaluate_labels
        self.pred, self.ref, self.spacing, self.table = pred, ref, spacing, table
        self.base = {r.index: r for r in evaluate_labels(pred, ref, spacing=spacing, labels=table).rows}

    def score(self, labels) -> dict:
        changed = np.unique(self.pred[labels != self.pred]).tolist()
        rows = dict(self.base)
        if changed:
            ev = self._eval(labels, self.ref, spacing=self.spacing, labels=self.table, label_ids=changed)
            rows.update({r.index: r for r in ev.rows})
        out = {}
        for name in METRICS:
            field = "rve_percent" if name == "abs_rve_percent" else name
            vals = np.array([getattr(r, field) for r in rows.values()], float)
            vals = np.abs(vals) if name == "abs_rve_percent" else vals
            out[name] = float(np.nanmean(vals))
        out["voxels_removed"] = int(np.count_nonzero(labels != self.pred))
        return out


def _variants(grid: bool):
    from limbseg_rt.runtime.analysis.cleanup import MIN_ML, NEAR_MM

    yield "as predicted", None
    yield "previous rule (10 % or box within 10 mm)", "previous"
    yield "10 % rule only", {"min_ml": math.inf, "near_mm": -1.0}
    yield f"clean-up (default: 10 % or {MIN_ML:g} mL, chained within {NEAR_MM:g} mm)", {}
    if grid:
        for near in (10.0, 15.0, 20.0, 25.0):
            for min_ml in (0.25, 0.5, 1.0, 2.0):
                yield f"grid: {min_ml:g} mL, {near:g} mm", {"min_ml": min_ml, "near_mm": near}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["unet", "sc-unet", "attention-unet"])
    p.add_argument("--seeds", nargs="+", type=int, default=[200, 201])
    p.add_argument("--grid", action="store_true", help="also the parameter grid the default was chosen from")
    p.add_argument("--cache", type=Path, default=None, help="folder for the predictions (reruns skip inference)")
    p.add_argument("--json", type=Path, default=None, help="write the numbers as JSON too")
    args = p.parse_args(argv)

    from limbseg_rt.runtime.analysis.cleanup import clean_labels
    from limbseg_rt.runtime.analysis.sides import assign_sides
    from limbseg_rt.runtime.model.labels import default_label_table

    table = default_label_table()
    results: dict = {}
    truth_removed: dict = {}
    for model in args.models:
        per_variant: dict = {}
        for seed in args.seeds:
            img, ref, pred, spacing = _predict(model, seed, args.cache)
            if seed not in truth_removed:  # the rule applied to the truth itself: what real anatomy it takes
                t_sides = assign_sides(ref, img, spacing, table).sides
                truth_removed[seed] = int(sum(clean_labels(ref, t_sides, spacing=spacing).removed.values()))
            sides = assign_sides(pred, img, spacing, table).sides
            scorer = Scorer(pred, ref, spacing, table)
            for name, how in _variants(args.grid):
                if how is None:
                    labels = pred
                elif how == "previous":
                    labels = previous_rule(pred, sides, spacing)
                else:
                    labels = clean_labels(pred, sides, spacing=spacing, **how).labels
                per_variant.setdefault(name, []).append(scorer.score(labels))
            print(f"{model} seed {seed}: done", file=sys.stderr, flush=True)
        results[model] = {
            name: {k: float(np.mean([s[k] for s in scores])) for k in scores[0]} for name, scores in per_variant.items()
        }
    seeds = ", ".join(str(s) for s in args.seeds)
    print(
        f"Bundled int8 models on CPU, held-out phantom seeds {seeds} (256 x 256 x 150): mean over 37 muscles and the seeds"
    )
    print()
    print(HEADER)
    print("|---|---|---|---|---|---|---|---|")
    for model, variants in results.items():
        for name, s in variants.items():
            print(
                f"| {model}, {name} | {s['dsc']:.4f} | {s['rve_percent']:.2f} | {s['abs_rve_percent']:.2f} | "
                f"{s['hd_mm']:.2f} | {s['hd95_mm']:.3f} | {s['assd_mm']:.4f} | {s['voxels_removed']:.0f} |"
            )
    print()
    print(
        "default rule on the truth itself (voxels removed): "
        + ", ".join(f"seed {k}: {v}" for k, v in truth_removed.items())
    )
    if args.json:
        args.json.write_text(
            json.dumps({"seeds": args.seeds, "results": results, "truth_removed": truth_removed}, indent=1)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
