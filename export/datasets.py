"""Training data: subjects -> preprocessed 2D slices, held in memory.

Three sources, one result (``SubjectSlices``):

- ``nifti_subject`` / ``nnunet_cases``: NIfTI image/label pairs in the nnU-Net folder convention
  (``imagesTr/<case>_0000.nii.gz`` + ``labelsTr/<case>.nii.gz``), reoriented to RAS+ canonical.
- ``png_subjects``: the authors' 2D layout, ``<subject>_<n>.png`` + ``<subject>_<n>_mask.png``
  (8-bit grayscale; mask pixel value = class index), ``n`` counted from the proximal end.
- ``phantom_subject``: a synthetic subject generated from a seed by ``runtime.phantom``.

Every slice goes through ``runtime.preprocess`` exactly as at inference: the intensity window is
taken over the whole subject volume, images are normalised then resized to ``input_hw`` (``resampling``),
labels are resized nearest-neighbour. Positions (SC-UNet) follow ``runtime.position``.

``SliceDataset`` concatenates subjects; item ``i`` is ``(image float32 [1, h, w] in [0, 1],
label int64 [h, w], position float32 scalar)`` as torch tensors.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from limbseg_rt.runtime.errors import InputError
from limbseg_rt.runtime.inference.preprocess import intensity_window, is_constant, preprocess_slices, resize_nearest
from limbseg_rt.runtime.model.input_spec import MODEL_INPUT_HW, NormalisationSpec
from limbseg_rt.runtime.model.position import slice_positions

DEFAULT_CLASSES = 38


@dataclass(frozen=True)
class SubjectSlices:
    """One subject, preprocessed. ``images`` float32 ``[Z, 1, h, w]`` in [0, 1]; ``labels`` uint8
    ``[Z, h, w]``; ``positions`` float32 ``[Z]`` (fraction of the limb, proximal -> distal)."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    positions: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _even_indices(n_total: int, n_keep: int | None) -> np.ndarray:
    # Evenly spread slices keep the whole limb represented when a subject is subsampled.
    if n_keep is None or n_keep >= n_total:
        return np.arange(n_total)
    if n_keep < 1:
        raise ValueError("slices per subject must be >= 1")
    return np.unique(np.round(np.linspace(0, n_total - 1, n_keep)).astype(np.int64))


def _check_labels(labels: np.ndarray, classes: int, name: str) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.size and (lab.min() < 0 or lab.max() >= classes):
        raise InputError(f"{name}: label values must lie in 0..{classes - 1}, found {int(lab.min())}..{int(lab.max())}")
    if np.issubdtype(lab.dtype, np.floating) and not np.all(lab == np.round(lab)):
        raise InputError(f"{name}: label image holds non-integer values; is it really a label map?")
    return lab.astype(np.uint8)


def subject_from_volume(
    name: str,
    image: np.ndarray,
    labels: np.ndarray,
    *,
    input_hw: tuple[int, int] = MODEL_INPUT_HW,
    spec: NormalisationSpec = NormalisationSpec(),
    max_slices: int | None = None,
    classes: int = DEFAULT_CLASSES,
    resampling: str = "exact",
) -> SubjectSlices:
    """Slice a RAS+ canonical volume pair ``[X, Y, Z]`` (z = 0 most inferior) into a subject.

    The window is computed over the whole volume before any subsampling (``max_slices`` keeps that
    many evenly spaced slices); positions are those of the full volume. ``resampling``: how slices
    are resized to ``input_hw`` (``"exact"`` | ``"antialias"``, see runtime preprocess.py); the
    exported model records it and the runtime resizes the same way.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape != np.shape(labels):
        raise InputError(f"{name}: image {image.shape} and labels {np.shape(labels)} must be 3D volumes of equal shape")
    lo, hi = intensity_window(image, spec)
    if is_constant(lo, hi):
        raise InputError(f"{name}: the image is constant (no contrast); it cannot be used for training")
    lab = _check_labels(labels, classes, name)
    keep = _even_indices(image.shape[2], max_slices)
    positions = slice_positions(image.shape[2], proximal_first=False)[keep]
    slices = np.moveaxis(image[:, :, keep], 2, 0)
    images = preprocess_slices(slices, lo, hi, input_hw, resampling)
    lab_slices = resize_nearest(np.moveaxis(lab[:, :, keep], 2, 0), input_hw)
    return SubjectSlices(name, images, np.ascontiguousarray(lab_slices), positions.astype(np.float32))


# --- NIfTI, nnU-Net folder convention -------------------------------------------------------


def nnunet_cases(root: str | Path) -> list[tuple[str, Path, Path]]:
    """``(case, image_path, label_path)`` for every case of an nnU-Net style folder, sorted by case.

    Looks for ``root/imagesTr/<case>_0000.nii[.gz]`` with a matching ``root/labelsTr/<case>.nii[.gz]``.
    """
    root = Path(root)
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise InputError(f"{root}: expected the folders imagesTr/ and labelsTr/ (nnU-Net layout)")
    cases = []
    for img in sorted(images_dir.iterdir()):
        m = re.fullmatch(r"(.+)_0000\.nii(\.gz)?", img.name)
        if not m:
            continue
        case = m.group(1)
        for ext in (".nii.gz", ".nii"):
            lab = labels_dir / f"{case}{ext}"
            if lab.is_file():
                cases.append((case, img, lab))
                break
        else:
            raise InputError(f"{img}: no label file labelsTr/{case}.nii.gz for this image")
    if not cases:
        raise InputError(f"{images_dir}: no <case>_0000.nii.gz images found")
    return cases


def _load_canonical(path: Path, *, labels: bool = False):
    """(canonical RAS+ ``[X, Y, Z]`` array, its affine) through the runtime's strict reader.

    The same checks and policies as ``limbseg-rt run`` (NaN/Inf, scaling, qform/sform, memory):
    images come back float32, label maps uint8/uint16 (``nifti.read_labels``).
    """
    from limbseg_rt.runtime.io.nifti import read_image, read_labels

    if labels:
        data, props = read_labels(path, grid="canonical")
    else:
        data, props = read_image(path)
    return data, props.canonical_affine


def nifti_subject(
    image_path: str | Path,
    label_path: str | Path,
    *,
    name: str | None = None,
    input_hw: tuple[int, int] = MODEL_INPUT_HW,
    spec: NormalisationSpec = NormalisationSpec(),
    max_slices: int | None = None,
    classes: int = DEFAULT_CLASSES,
    resampling: str = "exact",
) -> SubjectSlices:
    """Read an image/label NIfTI pair, reorient both to RAS+ canonical and slice along z."""
    image, affine = _load_canonical(Path(image_path))
    labels, label_affine = _load_canonical(Path(label_path), labels=True)
    if image.shape != labels.shape or not np.allclose(affine, label_affine, atol=1e-3):
        raise InputError(f"{label_path}: label volume does not share the image's grid (shape or affine differ)")
    return subject_from_volume(
        name or Path(image_path).name,
        image.astype(np.float32),
        labels,
        input_hw=input_hw,
        spec=spec,
        max_slices=max_slices,
        classes=classes,
        resampling=resampling,
    )


# --- the authors' PNG layout ----------------------------------------------------------------

_PNG_NAME = re.compile(r"(.+)_(\d+)\.png")


def _read_png(path: Path, *, mask: bool) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as exc:  # pillow ships with matplotlib; the export extra lists it
        raise InputError('reading PNG slices needs Pillow: pip install "limbseg-rt[export]"') from exc
    try:
        with Image.open(path) as im:
            if im.mode == "P" and mask:
                return np.asarray(im)  # palette index = class index
            arr = np.asarray(im)
    except Exception as exc:
        raise InputError(f"{path}: cannot be read as PNG ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 3:
        if mask and not np.all(arr[..., :3] == arr[..., :1]):
            raise InputError(f"{path}: colour mask; expected one grayscale class index per pixel")
        arr = arr[..., 0] if mask else arr[..., :3].astype(np.float32).mean(axis=2)
    return arr


def png_subject_files(root: str | Path) -> dict[str, list[tuple[int, Path, Path]]]:
    """Subject -> ``[(n, image_path, mask_path), ...]`` sorted by ``n`` for a folder of PNG slices."""
    root = Path(root)
    subjects: dict[str, list[tuple[int, Path, Path]]] = {}
    for path in sorted(root.glob("*.png")):
        m = _PNG_NAME.fullmatch(path.name)
        if not m or path.name.endswith("_mask.png"):
            continue
        mask = path.with_name(f"{m.group(1)}_{m.group(2)}_mask.png")
        if not mask.is_file():
            raise InputError(f"{path}: missing its mask {mask.name}")
        subjects.setdefault(m.group(1), []).append((int(m.group(2)), path, mask))
    if not subjects:
        raise InputError(f"{root}: no <subject>_<n>.png slices found")
    return {k: sorted(v) for k, v in sorted(subjects.items())}


def png_subject(
    name: str,
    files: Sequence[tuple[int, Path, Path]],
    *,
    input_hw: tuple[int, int] = MODEL_INPUT_HW,
    spec: NormalisationSpec = NormalisationSpec(),
    max_slices: int | None = None,
    classes: int = DEFAULT_CLASSES,
    resampling: str = "exact",
) -> SubjectSlices:
    """One subject of the PNG layout; position ``p = n / max(n)`` (the authors' rule)."""
    files = sorted(files)
    n_max = max(n for n, _, _ in files)
    if n_max < 1:
        raise InputError(f"{name}: slice numbers must start at 1")
    raw = [_read_png(img, mask=False).astype(np.float32) for _, img, _ in files]
    lo, hi = intensity_window(np.concatenate([r.ravel() for r in raw]), spec)
    if is_constant(lo, hi):
        raise InputError(f"{name}: all slices are constant (no contrast); cannot train on them")
    keep = _even_indices(len(files), max_slices)
    images, labels = [], []
    for k in keep:
        _, _, mask_path = files[k]
        mask = _read_png(mask_path, mask=True)
        if mask.shape != raw[k].shape:
            raise InputError(f"{mask_path}: mask size {mask.shape} differs from its image {raw[k].shape}")
        images.append(preprocess_slices(raw[k][None], lo, hi, input_hw, resampling)[0])
        labels.append(resize_nearest(_check_labels(mask, classes, str(mask_path)), input_hw))
    positions = np.array([files[k][0] / n_max for k in keep], dtype=np.float32)
    return SubjectSlices(name, np.stack(images), np.stack(labels), positions)


# --- phantom --------------------------------------------------------------------------------


def phantom_subject(
    seed: int,
    *,
    slices: int = 150,
    shape: tuple[int, int] = (256, 256),
    spacing: tuple[float, float, float] | None = None,
    input_hw: tuple[int, int] = MODEL_INPUT_HW,
    spec: NormalisationSpec = NormalisationSpec(),
    resampling: str = "exact",
) -> SubjectSlices:
    """Generate phantom subject ``seed`` once and keep its preprocessed slices in memory.

    ``spacing`` (mm, x y z) defaults to the phantom's own; a small ``shape`` needs a coarser
    spacing to keep both legs in the field of view."""
    from limbseg_rt.runtime.phantom.generate import phantom_arrays

    kw = {} if spacing is None else {"spacing": tuple(float(v) for v in spacing)}
    ph = phantom_arrays(int(seed), slices=int(slices), shape=tuple(shape), **kw)
    return subject_from_volume(
        f"phantom-{seed}", ph.image, ph.labels, input_hw=input_hw, spec=spec, resampling=resampling
    )


# --- the dataset ------------------------------------------------------------------------------


class SliceDataset(torch.utils.data.Dataset):
    """All slices of some subjects. Item: ``(image [1, h, w] float32, label [h, w] int64,
    position float32 scalar)``. ``images``/``labels``/``positions`` expose the stacked numpy
    arrays for fast batching; ``subject_ranges`` the slice range of each subject (for 3D Dice)."""

    def __init__(self, subjects: Sequence[SubjectSlices]):
        if not subjects:
            raise ValueError("a dataset needs at least one subject")
        shapes = {s.images.shape[1:] for s in subjects}
        if len(shapes) != 1:
            raise InputError(f"subjects were preprocessed to different slice sizes: {sorted(shapes)}")
        self.names = tuple(s.name for s in subjects)
        self.images = np.concatenate([s.images for s in subjects])
        self.labels = np.concatenate([s.labels for s in subjects])
        self.positions = np.concatenate([s.positions for s in subjects]).astype(np.float32)
        ends = np.cumsum([len(s) for s in subjects])
        self.subject_ranges = tuple((int(e - len(s)), int(e)) for s, e in zip(subjects, ends))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int):
        return (
            torch.from_numpy(self.images[i]),
            torch.from_numpy(self.labels[i].astype(np.int64)),
            torch.tensor(self.positions[i], dtype=torch.float32),
        )

    def batch(self, index: np.ndarray):
        """Stacked batch for ``index``: images ``[B,1,h,w]`` float32, labels ``[B,h,w]`` int64,
        positions ``[B]`` float32 (torch tensors)."""
        return (
            torch.from_numpy(self.images[index]),
            torch.from_numpy(self.labels[index].astype(np.int64)),
            torch.from_numpy(self.positions[index]),
        )
