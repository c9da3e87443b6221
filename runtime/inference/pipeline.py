"""Canonical volume -> labels, one batch of slices at a time.

Input is the RAS+ canonical float32 volume ``[X, Y, Z]`` (z = 0 most inferior) as produced by
``imageio.read_image``; output is uint8 labels ``[X, Y, Z]`` on the same grid. Axial slice ``k`` is
``volume[:, :, k]`` seen as ``[H, W] = [x, y]`` (see preprocess.py).

Memory: logits exist only for the batch in flight (``[B, C, h, w]``; they are resized back and
reduced to labels one class plane at a time); the whole-volume result is uint8. Preprocessing of batch k+1 runs in one
background thread while batch k is inferred (a queue of one batch), because normalising and
resizing release the GIL in numpy and ONNX Runtime releases it while running.

The engine is any callable ``predict(image float32 [N, 1, h, w], position float32 [N] | None)
-> logits float32 [N, C, h, w]`` (``Runner.predict`` fits).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from limbseg_rt.runtime.errors import InputError, ModelError
from limbseg_rt.runtime.inference.postprocess import StrayResult, suppress_stray_runs
from limbseg_rt.runtime.inference.preprocess import (
    intensity_window,
    is_constant,
    linear_axis,
    preprocess_slices,
)
from limbseg_rt.runtime.inference.tiling import TileCoord, sliding_window_logits
from limbseg_rt.runtime.model.metadata import ModelMetadata
from limbseg_rt.runtime.model.position import slice_positions

FIT_MODES = ("auto", "resize", "tile")
# --fit auto resizes while the resized slice's pixel spacing is within this factor of the model's
# trained spacing on both axes (the scale range the demo models' zoom augmentation covers), else tiles.
AUTO_FIT_MAX_SCALE = 1.15
DEFAULT_MEMORY_BUDGET_MB = 512.0
DEFAULT_MAX_BATCH = 4  # CPU: batch 4 is as fast per slice as 8 (docs/engines.md) and bounds engine working memory; GPUs: pass --batch-size

Predict = Callable[[np.ndarray, "np.ndarray | None"], np.ndarray]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PipelineOptions:
    """How slices are fed to the model.

    ``fit``: ``"resize"`` (each slice resized to the model's ``input_hw``, the paper's way),
    ``"tile"`` (resample to the model's trained pixel spacing, overlapping windows of ``input_hw``,
    Gaussian-blended) or ``"auto"`` (the default: one of the two per scan, see ``choose_fit``). ``batch_size``: slices per model call (tiles per call for ``"tile"``), or
    ``"auto"`` to pick from ``memory_budget_mb`` capped at ``max_batch``. ``limb_range``: the part
    ``(a, b)`` of the limb the scan covers, 0 = hip, 1 = ankle (SC-UNet positions only).
    """

    fit: str = "auto"
    batch_size: int | str = "auto"
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB
    max_batch: int = DEFAULT_MAX_BATCH
    tile_overlap: float = 0.5
    limb_range: tuple[float, float] | None = None
    prefetch: bool = True
    suppress_strays: bool = True  # relabel stray runs of slices after the loop (postprocess.py)

    def __post_init__(self) -> None:
        if self.fit not in FIT_MODES:
            raise ValueError(f"fit must be one of {FIT_MODES}, got {self.fit!r}")
        if self.batch_size != "auto" and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or 'auto', got {self.batch_size!r}")
        if self.limb_range is not None:
            check_limb_range(self.limb_range)


def check_limb_range(limb_range: tuple[float, float]) -> tuple[float, float]:
    """Validated ``(a, b)`` with ``0 <= a < b <= 1``; raises InputError otherwise."""
    a, b = float(limb_range[0]), float(limb_range[1])
    if not (0.0 <= a < b <= 1.0):
        raise InputError(f"limb range {a:g}:{b:g} is invalid; use A:B with 0 <= A < B <= 1 (0 = hip, 1 = ankle)")
    return a, b


@dataclass
class SliceRun:
    """What the slice loop produced. ``labels`` uint8 ``[X, Y, Z]`` on the canonical grid.

    ``strays``: what the stray-run suppression relabelled (None when it was off).
    ``timings`` (seconds): ``preprocess`` (in the background thread, overlapping ``infer``),
    ``infer`` and ``postprocess``. ``positions``: SC-UNet positions per canonical slice, or None.
    """

    labels: np.ndarray
    batch_size: int
    window: tuple[float, float]
    empty: bool
    positions: np.ndarray | None = None
    timings: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    resampled_hw: tuple[int, int] | None = None
    fit: str = "resize"
    fit_reason: str = ""
    strays: StrayResult | None = None


def choose_fit(
    slice_hw: tuple[int, int], spacing_xy_mm: tuple[float, float], metadata: ModelMetadata
) -> tuple[str, str]:
    """``(fit, reason)`` for ``--fit auto``: ``"resize"`` or ``"tile"`` and one line saying why.

    ``slice_hw``: the canonical slice ``[X, Y]`` in pixels; ``spacing_xy_mm``: its pixel spacing (mm).
    Resizing the slice to ``input_hw`` gives pixels of ``X * sx / H`` by ``Y * sy / W`` mm. When that
    is within ``AUTO_FIT_MAX_SCALE`` of the model's trained spacing on both axes, the anatomy has the
    scale the model learned and resize is right (one model call per slice). Otherwise (a field of
    view much wider or narrower than the trained one) the slice is resampled to the trained spacing
    and tiled. A model that records no trained spacing can only be resized.
    """
    if not metadata.pixel_spacing_mm:
        return "resize", "the model records no trained pixel spacing"
    h, w = metadata.input_hw
    fov = (slice_hw[0] * float(spacing_xy_mm[0]), slice_hw[1] * float(spacing_xy_mm[1]))
    resized = (fov[0] / h, fov[1] / w)
    scale = max(max(r / t, t / r) for r, t in zip(resized, metadata.pixel_spacing_mm))
    desc = (
        f"field of view {fov[0]:.0f} x {fov[1]:.0f} mm resized to {h} x {w} gives "
        f"{resized[0]:.2f} x {resized[1]:.2f} mm pixels; trained at "
        f"{metadata.pixel_spacing_mm[0]:.2f} x {metadata.pixel_spacing_mm[1]:.2f} mm"
    )
    if scale <= AUTO_FIT_MAX_SCALE:
        return "resize", f"{desc} (within {AUTO_FIT_MAX_SCALE:g}x)"
    return "tile", f"{desc} ({scale:.2f}x off): resampled to the trained spacing and tiled"


def auto_batch_size(
    classes: int,
    input_hw: tuple[int, int],
    slice_hw: tuple[int, int],
    *,
    fit: str = "resize",
    resampled_hw: tuple[int, int] | None = None,
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> int:
    """Slices per batch that keep the float32 arrays of one batch within the memory budget.

    Per slice (bytes): the model's logits ``C*h*w*4``, the model input twice (batch in flight and
    the one being prefetched) ``2*h*w*4``, and the raw slice copy ``X*Y*4``. The logits resized to
    the native slice never exist (``resized_argmax`` interpolates only pixels near label boundaries).
    ``"tile"`` adds the blended logits and their weight sum at the resampled size
    ``(C+1)*H'*W'*4`` and the resampled input ``H'*W'*4``. Always in ``[1, max_batch]``.
    """
    c = int(classes)
    per_slice = c * input_hw[0] * input_hw[1] * 4 + 2 * input_hw[0] * input_hw[1] * 4 + slice_hw[0] * slice_hw[1] * 4
    if fit == "tile" and resampled_hw is not None:
        per_slice += (c + 2) * resampled_hw[0] * resampled_hw[1] * 4
    budget = float(memory_budget_mb) * 1024 * 1024
    return int(max(1, min(int(max_batch), budget // max(per_slice, 1))))


def _positions(n_slices: int, metadata: ModelMetadata, limb_range: tuple[float, float] | None) -> np.ndarray | None:
    """SC-UNet positions for canonical slices (index 0 = most inferior = most distal)."""
    if not metadata.needs_position:
        return None
    a, b = limb_range if limb_range is not None else (0.0, 1.0)
    direction = metadata.position.direction if metadata.position else "proximal_to_distal"
    if direction == "proximal_to_distal":
        # Counting starts at the hip, which is the *last* canonical slice.
        return slice_positions(n_slices, proximal_first=False, limb_range=(a, b))
    # Counting starts at the ankle (canonical index 0); the limb range is given hip = 0, so flip it.
    return slice_positions(n_slices, proximal_first=True, limb_range=(1.0 - b, 1.0 - a))


def _prefetched(items: Iterable, enabled: bool) -> Iterator:
    """Yield ``items`` computed one step ahead in a background thread (queue of one item)."""
    if not enabled:
        yield from items
        return
    q: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    done = object()

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("done", done))
        except BaseException as exc:  # hand any failure to the consumer thread
            q.put(("error", exc))

    thread = threading.Thread(target=work, name="limbseg-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        # Drain so a blocked producer can notice ``stop`` and exit.
        while thread.is_alive():
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        thread.join()


def resized_argmax(logits: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """uint8 ``[N, X, Y]``: argmax over classes of ``resize_bilinear(logits, out_hw)``, bit for bit.

    ``logits``: float32 ``[N, C, h, w]``. The resized ``[N, C, X, Y]`` logits are never built (for
    38 classes at 512 x 512 that is 40 MB per slice). Instead:

    - An output pixel is a convex combination of four input pixels. If those four share their top
      class ``c``, and at each of them every other class is more than ``tol`` below ``c``, the
      combination keeps ``c`` on top: its exact margin is at least ``tol``, far above float32
      rounding of a weighted sum of four (``tol`` = 1e-4 x the slice's largest |logit|). Such
      pixels take ``c`` from the input-size argmax; no class plane is resized.
    - The remaining pixels (along label boundaries, a few per cent) are interpolated for every
      class with ``resize_bilinear``'s exact arithmetic (H first, then W, ``a * (1 - w) + b * w``
      in float32) and argmax-ed with ``np.argmax``'s tie rule (lowest class wins).

    Measured: 4 ms per slice for 38 classes 272 x 240 -> 256 x 256 (10 ms -> 512 x 512), against
    10 ms (21 ms) for resizing every class plane; tests compare it bit for bit with
    ``argmax(resize_bilinear(...))``.
    """
    x = np.asarray(logits, dtype=np.float32)
    n, c, h, w = x.shape
    big_h, big_w = int(out_hw[0]), int(out_hw[1])
    if (h, w) == (big_h, big_w):
        return np.argmax(x, axis=1).astype(np.uint8)
    # An axis of equal size gets i0 = i1 and weight 0: a * 1 + b * 0 == a exactly, as if skipped.
    i0, i1, wh = linear_axis(h, big_h)
    j0, j1, ww = linear_axis(w, big_w)
    one = np.float32(1.0)
    out = np.empty((n, big_h, big_w), np.uint8)
    near = np.empty((c, h, w), bool)
    top = np.empty((h, w), np.uint8)
    count = np.empty((h, w), np.uint8)
    for k in range(n):
        s = x[k]
        best = s.max(axis=0)
        tol = np.float32(1e-4) * (one + max(abs(float(best.max())), abs(float(s.min()))))
        np.greater_equal(s, best - tol, out=near)
        # Where exactly one class is near the top, that class's index is the sum of k * near[k]
        # (a per-plane uint8 loop: far faster than np.argmax over the strided class axis).
        top.fill(0)
        count.fill(0)
        for ch in range(1, c):
            plane = near[ch].view(np.uint8)
            top += plane * np.uint8(ch)
            count += plane
        count += near[0].view(np.uint8)
        safe = np.where(count == 1, top.astype(np.int16), np.int16(-1))  # -1: close call, interpolate it
        rows0, rows1 = safe[i0], safe[i1]
        a = rows0[:, j0]
        same = (a >= 0) & (a == rows0[:, j1]) & (a == rows1[:, j0]) & (a == rows1[:, j1])
        res = out[k]
        np.copyto(res, a, casting="unsafe")
        rr, cc = np.nonzero(~same)
        if rr.size:
            flat = s.reshape(c, h * w)
            r0, r1, wr = i0[rr] * w, i1[rr] * w, wh[rr]
            c0, c1, wc = j0[cc], j1[cc], ww[cc]
            left = np.take(flat, r0 + c0, axis=1) * (one - wr) + np.take(flat, r1 + c0, axis=1) * wr
            right = np.take(flat, r0 + c1, axis=1) * (one - wr) + np.take(flat, r1 + c1, axis=1) * wr
            res[rr, cc] = np.argmax(left * (one - wc) + right * wc, axis=0)
    return out


def _check_logits(logits: np.ndarray, n: int, classes: int, hw: tuple[int, int]) -> np.ndarray:
    out = np.asarray(logits)
    if out.shape != (n, classes, hw[0], hw[1]):
        raise ModelError(
            f"model returned logits of shape {tuple(out.shape)}, expected {(n, classes, hw[0], hw[1])} "
            "(its metadata disagrees with its graph)"
        )
    return out


def segment_canonical(
    volume: np.ndarray,
    metadata: ModelMetadata,
    predict: Predict,
    *,
    spacing_xy_mm: tuple[float, float] | None = None,
    options: PipelineOptions = PipelineOptions(),
    progress: Progress | None = None,
) -> SliceRun:
    """Labels uint8 ``[X, Y, Z]`` for a canonical float32 volume ``[X, Y, Z]``.

    ``spacing_xy_mm``: the in-plane voxel spacing in mm (needed by ``fit="tile"``, which assumes
    1 mm without it, and by ``fit="auto"``, which resizes without it). ``progress(done,
    total)`` is called after each batch with slice counts. An empty or constant image (no finite
    contrast) is not sent to the model: the result is all background and ``empty`` is True.
    """
    vol = np.asarray(volume)
    if vol.ndim != 3 or min(vol.shape) < 1:
        raise InputError(f"expected a 3D volume, got shape {vol.shape}")
    nx, ny, nz = vol.shape
    if not 1 < metadata.classes <= 256:
        raise ModelError(f"the model has {metadata.classes} classes; uint8 labels need 2..256")
    labels = np.zeros((nx, ny, nz), dtype=np.uint8)
    timings = {"preprocess": 0.0, "infer": 0.0, "postprocess": 0.0}
    positions = _positions(nz, metadata, options.limb_range)

    # The volume's window decides emptiness even for per-slice normalisation (a model whose
    # metadata says scope "slice" gets each slice's own window below).
    spec = metadata.normalisation
    per_slice = spec.scope == "slice"
    t0 = time.perf_counter()
    lo, hi = intensity_window(vol, spec)
    timings["preprocess"] += time.perf_counter() - t0

    fit, fit_reason = options.fit, "asked for"
    if fit == "auto":
        if spacing_xy_mm is None:
            fit, fit_reason = "resize", "no pixel spacing given"
        else:
            fit, fit_reason = choose_fit((nx, ny), spacing_xy_mm, metadata)
    if spacing_xy_mm is None:
        spacing_xy_mm = (1.0, 1.0)  # what tile mode always assumed without a spacing
    resampled_hw = None
    if fit == "tile":
        if not metadata.pixel_spacing_mm:
            raise ModelError(
                "--fit tile needs the model's trained pixel spacing, which this model does not record; use --fit resize"
            )
        resampled_hw = (
            max(1, int(round(nx * spacing_xy_mm[0] / metadata.pixel_spacing_mm[0]))),
            max(1, int(round(ny * spacing_xy_mm[1] / metadata.pixel_spacing_mm[1]))),
        )
    if options.batch_size == "auto":
        batch = auto_batch_size(
            metadata.classes,
            metadata.input_hw,
            (nx, ny),
            fit=fit,
            resampled_hw=resampled_hw,
            memory_budget_mb=options.memory_budget_mb,
            max_batch=options.max_batch,
        )
    else:
        batch = int(options.batch_size)

    run = SliceRun(labels, batch, (float(lo), float(hi)), False, positions, timings, [], resampled_hw, fit, fit_reason)
    if is_constant(lo, hi):
        run.empty = True
        run.notes.append(
            "the image has no contrast (empty or constant): no muscle can be found; all labels are background"
        )
        if progress:
            progress(nz, nz)
        return run

    def batches() -> Iterator[tuple[int, int, np.ndarray]]:
        for start in range(0, nz, batch):
            stop = min(nz, start + batch)
            t = time.perf_counter()
            slab = np.moveaxis(vol[:, :, start:stop], 2, 0)  # [n, X, Y]
            # Tile mode normalises the same way, then resamples to the trained pixel spacing instead.
            hw = metadata.input_hw if fit == "resize" else resampled_hw
            if per_slice:
                x = np.concatenate(
                    [preprocess_slices(s[None], *intensity_window(s, spec), hw, metadata.resampling) for s in slab]
                )
            else:
                x = preprocess_slices(slab, lo, hi, hw, metadata.resampling)
            timings["preprocess"] += time.perf_counter() - t
            yield start, stop, x

    classes = metadata.classes
    for start, stop, x in _prefetched(batches(), options.prefetch):
        n = stop - start
        t = time.perf_counter()
        if fit == "resize":
            pos = positions[start:stop] if positions is not None else None
            logits = _check_logits(predict(x, pos), n, classes, metadata.input_hw)
        else:

            def predict_tiles(tiles: np.ndarray, coords: list[TileCoord], _start: int = start) -> np.ndarray:
                pos = None
                if positions is not None:
                    pos = positions[[_start + c.index for c in coords]]
                return _check_logits(predict(tiles, pos), len(coords), classes, metadata.input_hw)

            logits = sliding_window_logits(
                x, predict_tiles, window_hw=metadata.input_hw, overlap=options.tile_overlap, batch_size=batch
            )
        t1 = time.perf_counter()
        timings["infer"] += t1 - t
        labels[:, :, start:stop] = np.moveaxis(resized_argmax(logits, (nx, ny)), 0, 2)
        del logits
        timings["postprocess"] += time.perf_counter() - t1
        if progress:
            progress(stop, nz)
    if options.suppress_strays:
        t = time.perf_counter()
        run.strays = suppress_stray_runs(labels)
        timings["postprocess"] += time.perf_counter() - t
    return run
