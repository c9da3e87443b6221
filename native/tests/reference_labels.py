"""Reference labels for the C library's parity test, computed the Python way.

Uses only ``limbseg_rt.runtime.inference.preprocess`` / ``position`` and onnxruntime directly (not the
pipeline), following the procedure the pipeline runs: window over the finite voxels of the whole
canonical volume ``[X, Y, Z]`` -> per batch of axial slices ``preprocess_slices`` -> logits
``[N, C, h, w]`` -> ``resize_bilinear`` back to ``(X, Y)`` -> argmax over C -> uint8 ``[X, Y, Z]``.
A volume without contrast gives all background without running the model (the pipeline's rule).

Command line (used by ctest): ``reference_labels.py MODEL VOLUME.npy OUT_LABELS.npy [--batch N]
[--positions P.npy]``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnxruntime as ort

from limbseg_rt.runtime.inference.preprocess import intensity_window, is_constant, preprocess_slices, resize_bilinear
from limbseg_rt.runtime.model.input_spec import NormalisationSpec
from limbseg_rt.runtime.model.position import slice_positions

METADATA_KEY = "limbseg_rt.metadata"


def open_session(model_path: str) -> tuple[ort.InferenceSession, dict]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model_path, sess_options=opts, providers=["CPUExecutionProvider"])
    meta = json.loads(sess.get_modelmeta().custom_metadata_map[METADATA_KEY])
    return sess, meta


def default_positions(n_slices: int, meta: dict) -> np.ndarray:
    """Positions of canonical slices (z = 0 most distal) for the model's position direction."""
    direction = (meta.get("position") or {}).get("direction", "proximal_to_distal")
    return slice_positions(n_slices, proximal_first=(direction != "proximal_to_distal"))


def reference_labels(
    model_path: str, volume: np.ndarray, *, positions: np.ndarray | None = None, batch: int = 1
) -> np.ndarray:
    """uint8 labels ``[X, Y, Z]`` of a canonical volume ``[X, Y, Z]`` (any real dtype)."""
    sess, meta = open_session(model_path)
    spec = NormalisationSpec.from_dict(meta["normalisation"])
    input_hw = tuple(meta["input_hw"])
    vol = np.asarray(volume, dtype=np.float32)
    nx, ny, nz = vol.shape
    labels = np.zeros((nx, ny, nz), dtype=np.uint8)
    lo, hi = intensity_window(vol, spec)
    if is_constant(lo, hi):
        return labels
    needs_position = "position" in meta["inputs"]
    if needs_position and positions is None:
        positions = default_positions(nz, meta)
    for start in range(0, nz, batch):
        stop = min(nz, start + batch)
        x = preprocess_slices(
            np.moveaxis(vol[:, :, start:stop], 2, 0), lo, hi, input_hw, meta.get("resampling", "exact")
        )
        feeds = {"image": x}
        if needs_position:
            feeds["position"] = np.asarray(positions[start:stop], dtype=np.float32)
        (logits,) = sess.run(["logits"], feeds)
        back = resize_bilinear(logits, (nx, ny))
        labels[:, :, start:stop] = np.moveaxis(np.argmax(back, axis=1).astype(np.uint8), 0, 2)
    return labels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("volume", help=".npy canonical volume [X, Y, Z]")
    ap.add_argument("out", help=".npy uint8 labels [X, Y, Z]")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--positions", help=".npy float32 [Z]")
    a = ap.parse_args()
    pos = np.load(a.positions) if a.positions else None
    np.save(a.out, reference_labels(a.model, np.load(a.volume), positions=pos, batch=a.batch))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
