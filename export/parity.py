"""Parity of an exported ONNX model against the PyTorch network it came from.

The reference is the PyTorch model in eval mode (fp32, BatchNorm *not* folded), so the check also
covers BatchNorm folding and the in-graph position one-hot. The candidate runs on ONNX Runtime's CPU
provider. Metrics are accumulated batch by batch (a 272 x 240 slice has 2.5 M logits):

- ``label_agreement``: fraction of pixels whose argmax equals the reference argmax;
- ``max_abs_logit_diff`` and ``logit_scale`` (max |reference logit|), ``max_logit_error`` their ratio;
- ``muscle_dice``: per-muscle Dice of candidate vs reference labels (code -> Dice);
- ``labels_output_consistent``: the graph's ``labels`` output equals argmax of its ``logits``.

``evaluate_parity`` returns the metrics and the list of failed gates; the exporter collects every
failure of every check and raises one ``ParityError``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from limbseg_rt.export.parity_data import SliceSet
from limbseg_rt.export.spec import IMAGE, LABELS, LOGITS, POSITION, Tolerance
from limbseg_rt.runtime.model.labels import LabelTable
from limbseg_rt.runtime.report.metrics import LabelCounts, label_counts


def ort_session(path, *, threads: int = 2):
    """A CPU ONNX Runtime session for ``path`` (quiet, ``threads`` intra-op threads)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def feeds_for(images: np.ndarray, positions: np.ndarray, needs_position: bool) -> dict:
    feeds = {IMAGE: np.ascontiguousarray(images, dtype=np.float32)}
    if needs_position:
        feeds[POSITION] = np.ascontiguousarray(positions, dtype=np.float32)
    return feeds


@dataclass
class _Accumulator:
    classes: int
    pixels: int = 0
    agree: int = 0
    max_diff: float = 0.0
    scale: float = 0.0
    nonfinite: int = 0
    inconsistent: int = 0

    def __post_init__(self) -> None:
        zeros = np.zeros(self.classes, dtype=np.int64)
        self.counts = LabelCounts(zeros, zeros, zeros)  # candidate = prediction, reference = ref

    def add(self, ref: np.ndarray, cand: np.ndarray, cand_labels: np.ndarray | None) -> None:
        ref_lab = ref.argmax(1)
        cand_lab = cand.argmax(1)
        self.nonfinite += int(np.count_nonzero(~np.isfinite(cand)))
        self.pixels += ref_lab.size
        same = ref_lab == cand_lab
        self.agree += int(same.sum())
        self.max_diff = max(self.max_diff, float(np.nanmax(np.abs(cand - ref))) if cand.size else 0.0)
        self.scale = max(self.scale, float(np.abs(ref).max()))
        self.counts = self.counts + label_counts(cand_lab, ref_lab, self.classes)
        if cand_labels is not None:
            self.inconsistent += int(np.count_nonzero(cand_labels.astype(np.int64) != cand_lab))


def _torch_logits(
    model: torch.nn.Module, images: np.ndarray, positions: np.ndarray, needs_position: bool
) -> np.ndarray:
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(images))
        if needs_position:
            return model(x, torch.from_numpy(np.ascontiguousarray(positions))).numpy()
        return model(x).numpy()


def evaluate_parity(
    model: torch.nn.Module,
    onnx_path,
    slices: SliceSet,
    *,
    precision: str,
    tolerance: Tolerance,
    labels: LabelTable,
    needs_position: bool,
    batch_size: int = 4,
    threads: int = 2,
) -> tuple[dict, list[str]]:
    """Run reference and candidate on ``slices``; returns (metrics dict, failed-gate messages).

    ``model`` must be in eval mode. Batches of ``batch_size`` exercise the dynamic batch axis.
    """
    session = ort_session(onnx_path, threads=threads)
    out_names = [o.name for o in session.get_outputs()]
    acc = _Accumulator(len(labels))
    for start in range(0, len(slices), batch_size):
        images = slices.images[start : start + batch_size]
        positions = slices.positions[start : start + batch_size]
        ref = _torch_logits(model, images, positions, needs_position)
        outs = dict(zip(out_names, session.run(None, feeds_for(images, positions, needs_position))))
        acc.add(ref, np.asarray(outs[LOGITS], dtype=np.float32), outs.get(LABELS))

    agreement = acc.agree / max(acc.pixels, 1)
    rel_error = acc.max_diff / acc.scale if acc.scale > 0 else float("inf") if acc.max_diff > 0 else 0.0
    union = acc.counts.ref + acc.counts.pred
    per_class = acc.counts.dice()
    dice = {}
    small = {}
    for c in range(1, len(labels)):
        if union[c] == 0:
            continue
        (dice if union[c] >= tolerance.min_dice_pixels else small)[labels[c].code] = round(float(per_class[c]), 5)
    metrics = {
        "precision": precision,
        "slices": len(slices),
        "slice_hw": list(slices.images.shape[2:]),
        "source": slices.source,
        "label_agreement": agreement,
        "max_abs_logit_diff": acc.max_diff,
        "logit_scale": acc.scale,
        "max_logit_error": rel_error,
        "muscle_dice": dice,
        "muscle_dice_small": small,
        "min_muscle_dice": min(dice.values()) if dice else None,
        "labels_output_consistent": acc.inconsistent == 0 if LABELS in out_names else None,
        "tolerance": tolerance.to_dict(),
    }
    failures = []
    if acc.nonfinite:
        failures.append(f"{precision}: {acc.nonfinite} non-finite logits")
    if tolerance.min_label_agreement is not None and agreement < tolerance.min_label_agreement:
        failures.append(f"{precision}: label agreement {agreement:.5%} < {tolerance.min_label_agreement:.5%}")
    if tolerance.max_logit_error is not None:
        allowed = tolerance.max_logit_error * acc.scale + tolerance.logit_atol
        if not acc.max_diff <= allowed:
            failures.append(
                f"{precision}: max |logit difference| {acc.max_diff:.3g} > {allowed:.3g} "
                f"({tolerance.max_logit_error:g} x logit scale {acc.scale:.3g} + {tolerance.logit_atol:g})"
            )
    if tolerance.min_muscle_dice is not None:
        low = {k: v for k, v in dice.items() if v < tolerance.min_muscle_dice}
        if low:
            worst = ", ".join(f"{k} {v:.3f}" for k, v in sorted(low.items(), key=lambda kv: kv[1]))
            failures.append(f"{precision}: muscle Dice vs fp32 below {tolerance.min_muscle_dice} for {worst}")
        if not dice:
            failures.append(
                f"{precision}: no muscle covers {tolerance.min_dice_pixels} pixels on the held-out slices; "
                "Dice parity cannot be judged (untrained model or wrong data?)"
            )
    if acc.inconsistent:
        failures.append(f"{precision}: 'labels' output differs from argmax of 'logits' at {acc.inconsistent} pixels")
    return metrics, failures


LATENCY_ROUNDS, LATENCY_MIN_ROUNDS, LATENCY_WARMUP = 15, 5, 3
# What measure_latencies measures with its defaults, in words (recorded next to the numbers it gives).
LATENCY_TIMING = (
    f"median over {LATENCY_MIN_ROUNDS}-{LATENCY_ROUNDS} interleaved rounds (fp32, int8, fp32, ...) "
    f"after {LATENCY_WARMUP} warm-up calls each; a round's sample is the mean of two back-to-back "
    "calls after one untimed call"
)


def measure_latencies(
    paths: dict,
    feeds: dict,
    *,
    threads: int = 2,
    rounds: int = LATENCY_ROUNDS,
    warmup: int = LATENCY_WARMUP,
    budget_s: float = 5.0,
    settle_s: float = 0.02,
) -> dict:
    """Median wall time (ms) per call of each model in ``paths`` (name -> file) on ``feeds``, timed
    interleaved (A B A B ...) so that load from other processes hits all alike: ``warmup`` calls each,
    then up to ``rounds`` rounds, at least ``LATENCY_MIN_ROUNDS``, fewer once ``budget_s`` seconds have passed. In a round each
    model gets a pause of ``settle_s`` (the previous session's worker threads stop spinning, which would
    otherwise take the cores), one untimed call (wakes its threads, refills caches), then two timed
    back-to-back calls, as a volume runs."""
    sessions = {name: ort_session(path, threads=threads) for name, path in paths.items()}
    for session in sessions.values():
        for _ in range(warmup):
            session.run(None, feeds)
    times: dict = {name: [] for name in sessions}
    start = time.perf_counter()
    for k in range(rounds):
        if k >= LATENCY_MIN_ROUNDS and time.perf_counter() - start > budget_s:
            break
        for name, session in sessions.items():
            time.sleep(settle_s)
            session.run(None, feeds)  # untimed: wakes this session's threads and caches after the other's turn
            t0 = time.perf_counter()
            for _ in range(2):
                session.run(None, feeds)
            times[name].append((time.perf_counter() - t0) / 2)
    return {name: float(np.median(v) * 1000.0) for name, v in times.items()}
