"""Recover a PyTorch training checkpoint from one of our exported ONNX files.

The exporter keeps every parameter's PyTorch name (``net.<state_dict key>``) and folds each
BatchNorm into the convolution before it. Recovery inverts that: each convolution takes the folded
weight, and its BatchNorm becomes the identity plus the folded bias (weight 1, bias b, running mean
0, running variance 1 - eps), which computes exactly the exported function in eval mode. int8 files
store most weights quantised; they are dequantised (``(q - zero_point) * scale``), so a checkpoint
recovered from an int8 file holds the int8 model's weights, not the float weights it was made from.

The result is checked before it is written: the recovered network, run by PyTorch, must reproduce
the ONNX file's logits (fp32: within 1e-3 of the logit scale) or labels (int8: >= 99 % agreement,
since ONNX Runtime also quantises activations) on phantom slices.

    python -m limbseg_rt.export.recover_checkpoint runtime/data/models/unet-fp32.onnx --out unet.pth.tar
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

METADATA_KEY = "limbseg_rt.metadata"
PREFIX = "net."
# Suffixes of int8 weights: the quantiser's own, and ours for ConvTranspose weights (export/quantize.py).
QUANTISED = ("_quantized", "_int8")


def _dequantise(node, arrays: dict[str, np.ndarray]) -> np.ndarray:
    q, scale = arrays[node.input[0]], arrays[node.input[1]]
    zp = arrays[node.input[2]] if len(node.input) > 2 and node.input[2] else np.zeros_like(q)
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and q.ndim > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((q.astype(np.float64) - zp.astype(np.float64)) * scale.astype(np.float64)).astype(np.float32)


def onnx_parameters(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """({PyTorch parameter name: float32 array}, the file's limbseg metadata)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    meta = json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    arrays = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    params = {
        k[len(PREFIX) :]: v.astype(np.float32)
        for k, v in arrays.items()
        if k.startswith(PREFIX) and v.dtype.kind == "f" and not k.endswith("_scale")
    }
    for node in model.graph.node:
        src = node.input[0] if node.op_type == "DequantizeLinear" else ""
        suffix = next((q for q in QUANTISED if src.endswith(q)), None)
        if src.startswith(PREFIX) and suffix and src in arrays:
            params[src[len(PREFIX) : -len(suffix)]] = _dequantise(node, arrays)
    return params, meta


def recovered_state_dict(net, params: dict[str, np.ndarray]) -> dict:
    """A full state dict for ``net`` from the exported parameters (BatchNorm unfolded as identity)."""
    import torch
    from torch import nn

    state = {k: v.clone() for k, v in net.state_dict().items()}
    used = set()
    modules = dict(net.named_modules())
    for name, module in modules.items():
        if isinstance(module, nn.BatchNorm2d):
            parent, _, idx = name.rpartition(".")
            conv = f"{parent}.{int(idx) - 1}" if parent else str(int(idx) - 1)
            bias = params.get(f"{conv}.bias")
            if bias is None:
                raise ValueError(f"no folded bias for the convolution before BatchNorm {name}")
            state[f"{name}.weight"] = torch.ones_like(state[f"{name}.weight"])
            state[f"{name}.bias"] = torch.from_numpy(bias.copy())
            state[f"{name}.running_mean"] = torch.zeros_like(state[f"{name}.running_mean"])
            state[f"{name}.running_var"] = torch.full_like(state[f"{name}.running_var"], 1.0 - module.eps)
            used.add(f"{conv}.bias")
    for key in state:
        if key in params:
            if tuple(params[key].shape) != tuple(state[key].shape):
                raise ValueError(f"{key}: ONNX shape {params[key].shape} vs model {tuple(state[key].shape)}")
            state[key] = torch.from_numpy(params[key].copy())
            used.add(key)
    missing = sorted(
        k
        for k in state
        if k not in used
        and not k.endswith("num_batches_tracked")
        and k.rsplit(".", 1)[0] not in {n for n, m in modules.items() if isinstance(m, nn.BatchNorm2d)}
    )
    if missing:
        raise ValueError(f"model parameters the ONNX file does not hold: {missing[:5]}")
    unused = sorted(set(params) - used)
    if unused:
        raise ValueError(f"exported parameters with no place in the model: {unused[:5]}")
    return state


def recover(path: Path):
    """(network in eval mode with the recovered weights, the file's metadata)."""
    from limbseg_rt.models import create_model

    params, meta = onnx_parameters(path)
    net = create_model(
        meta["architecture"], classes=meta["classes"], features=tuple(meta["features"]), in_channels=meta["in_channels"]
    )
    net.load_state_dict(recovered_state_dict(net, params))
    return net.eval(), meta


def check_recovery(net, meta: dict, path: Path, *, slices: int = 8) -> dict:
    """PyTorch vs ONNX Runtime on held-out phantom slices: max logit error (relative to the largest
    logit) and label agreement."""
    import onnxruntime as ort
    import torch

    from limbseg_rt.export.parity_data import parity_sets

    held_out = parity_sets("phantom", hw=tuple(meta["input_hw"]), slices_per_volume=slices)[1]
    image, position = held_out.images.astype(np.float32), held_out.positions.astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"image": image}
    if "position" in meta["inputs"]:
        feed["position"] = position
    ort_logits = sess.run(["logits"], feed)[0]
    with torch.inference_mode():
        args = [torch.from_numpy(image)] + ([torch.from_numpy(position)] if "position" in feed else [])
        pt = net(*args).numpy()
    scale = float(np.abs(ort_logits).max()) or 1.0
    return {
        "max_rel_logit_error": float(np.abs(pt - ort_logits).max() / scale),
        "label_agreement": float((pt.argmax(1) == ort_logits.argmax(1)).mean()),
        "slices": int(image.shape[0]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path, help="an exported .onnx file (fp32 or int8)")
    ap.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pth.tar)")
    args = ap.parse_args(argv)
    from limbseg_rt.models.checkpoint import save_checkpoint

    net, meta = recover(args.model)
    check = check_recovery(net, meta, args.model)
    fp32 = meta.get("precision") == "fp32"
    ok = check["max_rel_logit_error"] <= 1e-3 if fp32 else check["label_agreement"] >= 0.99
    if not ok:
        raise SystemExit(f"recovered network does not reproduce {args.model}: {check}")
    save_checkpoint(
        net,
        args.out,
        extra={
            "arch": meta["architecture"],
            "features": list(meta["features"]),
            "recovered_from": args.model.name,
            "recovered_from_sha256": meta.get("checkpoint_sha256", ""),
            "recovery_check": check,
        },
    )
    print(json.dumps({"out": str(args.out), **check}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
