"""Checkpoint -> ONNX model with metadata, parity-checked; fp32, fp16 or int8.

``export_model`` is the whole procedure (the ``limbseg-rt export`` command is a thin wrapper):

1. read the checkpoint safely (``models.checkpoint``), build the network, check every key;
2. fold BatchNorm into the preceding convolutions (a copy of the model) and export with
   ``torch.onnx.export(dynamo=True)`` (torch.export based; gives a clean graph: no BatchNormalization,
   Identity or shape-arithmetic nodes) with dynamic N, H, W (H, W multiples of 2**levels);
3. convert to fp16 or quantise to int8 when asked;
4. run the parity checks against the unfolded PyTorch model on real slices (all of them, then one
   ``ParityError``); for int8 also measure the speed-up over fp32;
5. write ``runtime.metadata.ModelMetadata`` (with the parity results) into ``metadata_props`` and
   move the file into place. Every intermediate lives in a temporary folder and the final file is
   renamed into place last, so a failure at any step leaves no output file behind.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

import limbseg_rt
from limbseg_rt.export.parity import LATENCY_TIMING, evaluate_parity, feeds_for, measure_latencies
from limbseg_rt.export.parity_data import parity_sets
from limbseg_rt.export.quantize import to_fp16, to_int8
from limbseg_rt.export.spec import DEFAULT_OPSET, IMAGE, LABELS, LOGITS, POSITION, ExportSpec, Tolerance, export_spec
from limbseg_rt.models import DEFAULT_FEATURES, check_state_dict, create_model, read_checkpoint
from limbseg_rt.runtime.errors import ModelError, ParityError
from limbseg_rt.runtime.hashing import sha256_file
from limbseg_rt.runtime.io.outputs import OutputSet
from limbseg_rt.runtime.model.input_spec import MODEL_INPUT_HW, RESAMPLING_MODES, NormalisationSpec
from limbseg_rt.runtime.model.labels import LabelTable, default_label_table
from limbseg_rt.runtime.model.metadata import METADATA_KEY, ModelMetadata, PositionSpec

# 17 is the oldest opset torch's exporter reaches by down-conversion for these graphs (measured).
MIN_OPSET, MAX_OPSET = 17, 23
EXPORTER = "limbseg-rt export (torch.onnx dynamo, BatchNorm folded)"


@dataclass(frozen=True)
class ExportResult:
    """``path``: the written model; ``metadata``: what was stored in it; ``parity``: the checks."""

    path: Path
    metadata: ModelMetadata
    parity: dict


# --- model preparation --------------------------------------------------------------------------


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every (Conv2d, BatchNorm2d) pair inside an
    ``nn.Sequential`` fused into one Conv2d (BatchNorm replaced by Identity). Raises if any
    BatchNorm is left over (it would then appear in the graph)."""
    folded = copy.deepcopy(model).eval()
    for seq in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                seq[i] = torch.nn.utils.fusion.fuse_conv_bn_eval(seq[i], seq[i + 1])
                seq[i + 1] = nn.Identity()
    left = [name for name, m in folded.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise RuntimeError(f"BatchNorm layers not preceded by a convolution cannot be folded: {left}")
    return folded


class _ImageGraph(nn.Module):
    def __init__(self, net: nn.Module, with_labels: bool):
        super().__init__()
        self.net, self.with_labels = net, with_labels

    def forward(self, image: torch.Tensor):
        logits = self.net(image)
        if self.with_labels:
            return logits, torch.argmax(logits, dim=1).to(torch.uint8)
        return logits


class _PositionGraph(_ImageGraph):
    def forward(self, image: torch.Tensor, position: torch.Tensor):  # type: ignore[override]
        logits = self.net(image, position)
        if self.with_labels:
            return logits, torch.argmax(logits, dim=1).to(torch.uint8)
        return logits


@contextlib.contextmanager
def _quiet():
    """torch.onnx prints progress and logs warnings; library code stays silent."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _rename_dims(model, mapping: dict[str, str]) -> None:
    for vi in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        for dim in vi.type.tensor_type.shape.dim:
            if dim.dim_param in mapping:
                dim.dim_param = mapping[dim.dim_param]


def export_fp32_graph(
    model: nn.Module,
    spec: ExportSpec,
    path: Path,
    *,
    features: tuple[int, ...],
    with_labels_output: bool,
    example_hw: tuple[int, int],
) -> None:
    """Export ``model`` (eval, BatchNorm already folded) to ``path``: fp32, checked, shapes inferred."""
    import onnx

    multiple = 2 ** len(features)
    wrapper = (_PositionGraph if spec.needs_position else _ImageGraph)(model, with_labels_output).eval()
    n = torch.export.Dim("N", min=1, max=4096)
    h = torch.export.Dim("h", min=1, max=8192 // multiple)
    w = torch.export.Dim("w", min=1, max=8192 // multiple)
    image = torch.rand(2, model.in_channels, *example_hw)
    args: tuple = (image,)
    dynamic: dict = {IMAGE: {0: n, 2: multiple * h, 3: multiple * w}}
    if spec.needs_position:
        args = (image, torch.tensor([0.25, 0.75]))
        dynamic[POSITION] = {0: n}
    outputs = [LOGITS, LABELS] if with_labels_output else [LOGITS]
    with _quiet():
        program = torch.onnx.export(
            wrapper,
            args,
            dynamo=True,
            input_names=list(spec.input_names),
            output_names=outputs,
            dynamic_shapes=dynamic,
            opset_version=spec.opset,
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    got = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if got != spec.opset:  # torch falls back to its own opset when down-conversion fails
        raise ModelError(f"the exporter could not produce opset {spec.opset} (got {got}); use {DEFAULT_OPSET}")
    _rename_dims(proto, {f"{multiple}*h": "H", f"{multiple}*w": "W"})
    bn = [node.name for node in proto.graph.node if node.op_type == "BatchNormalization"]
    if bn:
        raise RuntimeError(f"exported graph still holds BatchNormalization nodes: {bn[:5]}")
    proto = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


# --- inputs ---------------------------------------------------------------------------------------


def _label_table(labels) -> LabelTable:
    if labels is None:
        return default_label_table()
    if isinstance(labels, LabelTable):
        return labels
    path = Path(labels)
    try:
        return LabelTable.from_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelError(f"label table {path} cannot be read ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"label table {path.name} is not a valid label table JSON ({exc})") from None


def _versions(opset: int) -> dict:
    import onnx
    import onnxruntime

    return {
        "limbseg_rt": limbseg_rt.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": int(opset),
    }


def _check_out(out: Path, checkpoint: Path, calibration=None) -> OutputSet:
    """The export's ``OutputSet`` (one model file), checked: never the checkpoint or calibration data."""
    inputs = [checkpoint]
    if calibration is not None and not isinstance(calibration, tuple) and str(calibration) != "phantom":
        inputs.append(Path(calibration))
    outs = OutputSet(inputs=inputs)
    outs.add("model", out, what="model file")
    outs.check()
    return outs


def load_network(arch: str, checkpoint: Path, *, features, classes: int) -> tuple[nn.Module, dict, tuple[int, ...]]:
    """(eval-mode network with the checkpoint's weights, checkpoint dict, features used)."""
    ckpt = read_checkpoint(checkpoint)
    ckpt_arch = ckpt.get("arch")
    if isinstance(ckpt_arch, str) and ckpt_arch != arch:
        raise ModelError(f"{checkpoint.name} holds a {ckpt_arch!r} network, not {arch!r}; pass --arch {ckpt_arch}")
    if features is None:
        features = ckpt.get("features") or DEFAULT_FEATURES
    try:
        feats = tuple(int(f) for f in features)
        model = create_model(arch, classes=classes, features=feats)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"bad feature widths {features!r}: {exc}") from None
    check_state_dict(model, ckpt["state_dict"], source=checkpoint.name)
    model.load_state_dict(ckpt["state_dict"], strict=False)
    return model.eval(), ckpt, feats


# --- the procedure --------------------------------------------------------------------------------


def export_model(
    arch: str,
    checkpoint,
    out,
    *,
    features=None,
    precision: str = "fp32",
    calibration=None,
    opset: int = DEFAULT_OPSET,
    labels=None,
    with_labels_output: bool = True,
    pixel_spacing_mm: tuple[float, float] | None = None,
    input_hw: tuple[int, int] = MODEL_INPUT_HW,
    parity_hw: tuple[int, int] | None = None,
    parity_slices: int = 8,
    tolerance: Tolerance | None = None,
    measure_speed: bool = True,
    threads: int = 2,
    int8_float_levels: int = 0,
    resampling: str | None = None,
) -> ExportResult:
    """Export checkpoint ``checkpoint`` of architecture ``arch`` to the ONNX file ``out``.

    ``features``: encoder widths; None takes the checkpoint's ``"features"`` entry, else the paper's.
    ``precision``: ``fp32`` | ``fp16`` | ``int8``. ``calibration``: ``"phantom"`` (default) or a
    folder of NIfTI scans; its slices feed the parity checks and int8 calibration (calibration and
    held-out slices come from different scans). ``labels``: LabelTable or label-table JSON path
    (default: the project's 38-class table). ``input_hw``: trained slice size [H, W] recorded in the
    metadata (multiples of 2**len(features)); ``parity_hw``: slice size for the parity run (default
    ``input_hw``; tests use smaller). ``pixel_spacing_mm``: trained in-plane spacing, recorded when
    known. ``tolerance``: override the spec's gates for this precision (e.g. a documented looser
    gate for an untrained model). ``threads``: ONNX Runtime threads for parity and speed runs.
    ``int8_float_levels``: int8 only; the finest resolution levels kept in float (see ``to_int8``).
    ``resampling``: how the model's training slices were resized (``"exact"`` | ``"antialias"``,
    recorded in the metadata); None takes the checkpoint's ``"resampling"`` entry, and a checkpoint
    without one (the authors') gets ``"exact"``, the paper's preprocessing.

    Raises ``ModelError`` (bad checkpoint, labels, widths), ``OutputError`` (bad ``out``),
    ``InputError`` (bad calibration data) and ``ParityError`` (all failed checks at once). On any
    error no file is left at ``out``.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise ModelError(f"opset {opset} is not supported; use {MIN_OPSET}..{MAX_OPSET} (default {DEFAULT_OPSET})")
    spec = export_spec(arch, opset=opset)  # ValueError for unknown arch
    tol = tolerance if tolerance is not None else spec.tolerance(precision)
    table = _label_table(labels)
    outs = _check_out(out, checkpoint, calibration)
    model, ckpt, feats = load_network(arch, checkpoint, features=features, classes=len(table))
    resampling = str(resampling or ckpt.get("resampling") or "exact")
    if resampling not in RESAMPLING_MODES:
        raise ModelError(f"resampling {resampling!r} is not one of {', '.join(RESAMPLING_MODES)}")
    multiple = 2 ** len(feats)
    hw = tuple(int(v) for v in input_hw)
    phw = tuple(int(v) for v in (parity_hw or hw))
    for name, size in (("input_hw", hw), ("parity_hw", phw)):
        if any(v < multiple or v % multiple for v in size):
            raise ModelError(f"{name} {size} must be multiples of {multiple} (2 ** {len(feats)} levels)")

    # Real slices first: a bad calibration folder should fail before the slow export.
    calib, heldout = parity_sets(calibration, hw=phw, slices_per_volume=parity_slices)
    if spec.needs_position:
        heldout = heldout.with_edge_positions()
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))  # restored below: callers keep their setting
    try:
        with tempfile.TemporaryDirectory(prefix="limbseg-export-") as tmp:
            work = Path(tmp)
            fp32_path = work / "fp32.onnx"
            export_fp32_graph(
                fold_batchnorm(model),
                spec,
                fp32_path,
                features=feats,
                with_labels_output=with_labels_output,
                example_hw=(multiple * 2, multiple * 2),
            )
            conversion: dict = {}
            candidate = fp32_path
            if precision == "fp16":
                candidate = work / "fp16.onnx"
                conversion = to_fp16(fp32_path, candidate)
            elif precision == "int8":
                candidate = work / "int8.onnx"
                conversion = to_int8(
                    fp32_path,
                    candidate,
                    calib,
                    needs_position=spec.needs_position,
                    work_dir=work,
                    float_levels=int8_float_levels,
                    hw=phw,
                )

            metrics, failures = evaluate_parity(
                model,
                candidate,
                heldout,
                precision=precision,
                tolerance=tol,
                labels=table,
                needs_position=spec.needs_position,
                threads=threads,
            )
            parity = {**metrics, "passed": not failures, "conversion": conversion}
            if precision == "int8" and measure_speed:
                parity["speed"] = _speed(fp32_path, candidate, hw, spec.needs_position, model.in_channels, threads)
            if failures:
                raise ParityError(failures)

            metadata = ModelMetadata(
                architecture=spec.architecture,
                features=feats,
                in_channels=model.in_channels,
                labels=table,
                input_hw=hw,
                normalisation=NormalisationSpec(),
                precision=precision,
                inputs=spec.input_names,
                outputs=(LOGITS, LABELS) if with_labels_output else (LOGITS,),
                position=PositionSpec() if spec.needs_position else None,
                pixel_spacing_mm=tuple(float(s) for s in pixel_spacing_mm) if pixel_spacing_mm else None,
                resampling=resampling,
                checkpoint_sha256=sha256_file(checkpoint),
                exporter=EXPORTER,
                versions=_versions(spec.opset),
                parity=_jsonable(parity),
            )
            with outs:
                _write_with_metadata(candidate, outs, metadata)
    finally:
        torch.set_num_threads(torch_threads)
        outs.discard()
    return ExportResult(out, metadata, metadata.parity)


def _speed(fp32_path: Path, candidate: Path, hw, needs_position: bool, in_channels: int, threads: int) -> dict:
    """int8 vs fp32 latency, batch 1, at the trained size (a measurement, recorded, not gated)."""
    rng = np.random.default_rng(0)
    feeds = feeds_for(rng.random((1, in_channels, *hw), dtype=np.float32), np.array([0.5], np.float32), needs_position)
    ms = measure_latencies({"fp32": fp32_path, "int8": candidate}, feeds, threads=threads)
    return {
        "fp32_ms": round(ms["fp32"], 2),
        "int8_ms": round(ms["int8"], 2),
        "speedup_vs_fp32": round(ms["fp32"] / ms["int8"], 3),
        "batch": 1,
        "hw": list(hw),
        "threads": threads,
        "timing": LATENCY_TIMING,
        "provider": "CPUExecutionProvider",
    }


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if np.isfinite(v) else str(v)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _write_with_metadata(candidate: Path, outs: OutputSet, metadata: ModelMetadata) -> None:
    """Store ``metadata`` in ``metadata_props``, check, write beside the target and publish it."""
    import onnx

    proto = onnx.load(str(candidate))
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=METADATA_KEY, value=metadata.to_json())
    proto.producer_name = "limbseg-rt"
    proto.producer_version = limbseg_rt.__version__
    onnx.checker.check_model(proto)
    with outs.writing("model"):
        onnx.save(proto, str(outs.temp("model")))
    outs.commit()
