"""Benchmark models: full-size paper networks with seeded random weights, exported once into a cache.

Random but fixed weights make the speed of the paper's networks measurable without shipping 3 x 120 MB
of trained weights; they are useless for accuracy (tiny logit margins, see docs/engines.md), so accuracy
gates use the bundled, trained demo models instead.

Cache layout: ``<root>/bench/<arch>-f<features>-s<seed>-<versions hash>/{model.pth.tar, fp32.onnx,
int8.onnx}``. The key includes torch, onnx, onnxruntime and limbseg-rt versions, so upgrading any of
them re-exports. Files are written by ``export_model`` (atomic rename), so a crashed run leaves no
half-written model that a later run would trust.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAPER_FEATURES = (64, 128, 256, 512)
PAPER_HW = (272, 240)
WEIGHT_SEED = 20240101
CALIBRATION_SLICES = 8  # per phantom volume; 2 volumes -> 16 calibration slices at 272 x 240
HELDOUT_SLICES = 4
# The demo models' PyTorch checkpoints (checkpoints/README.md): the PyTorch reference for the bundled models.
DEMO_CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


@dataclass(frozen=True)
class BenchModel:
    """One network of the benchmark: ``paths[precision]`` are ONNX files; ``checkpoint`` the PyTorch
    weights (for bundled demo models the repository's ``checkpoints/`` file, None if absent). ``hw``: slice size [H, W] in pixels."""

    name: str
    arch: str
    features: tuple[int, ...]
    hw: tuple[int, int]
    paths: dict
    checkpoint: Path | None
    trained: bool

    @property
    def needs_position(self) -> bool:
        return self.arch == "sc-unet"


def versions_key() -> str:
    """Short hash of the versions an exported file depends on."""
    import onnx
    import onnxruntime
    import torch

    import limbseg_rt

    text = f"torch{torch.__version__}-onnx{onnx.__version__}-ort{onnxruntime.__version__}-lsg{limbseg_rt.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def cache_dir(root: Path, arch: str, features: tuple[int, ...], seed: int = WEIGHT_SEED) -> Path:
    return Path(root) / "bench" / f"{arch}-f{'.'.join(map(str, features))}-s{seed}-{versions_key()}"


def reference_model(arch: str, features: tuple[int, ...] = PAPER_FEATURES, seed: int = WEIGHT_SEED):
    """The PyTorch network in eval mode with weights drawn from ``torch.manual_seed(seed)``."""
    import torch

    from limbseg_rt.models import create_model

    torch.manual_seed(seed)
    return create_model(arch, features=features).eval()


def _slice_sets(hw: tuple[int, int]):
    """(calibration, held-out) phantom slices at ``hw``: phantom seeds disjoint from each other."""
    from limbseg_rt.export.parity_data import phantom_sets

    return phantom_sets(hw=hw, slices_per_volume=CALIBRATION_SLICES)


def ensure_exported(
    arch: str, precisions, *, root: Path, features=PAPER_FEATURES, hw=PAPER_HW, seed: int = WEIGHT_SEED
) -> BenchModel:
    """Export (if not cached) ``arch`` with seeded random weights in each of ``precisions``.

    fp32 is exported with the spec's parity gates (agreement >= 99.99 %, logits within 1e-4 of scale):
    a real check of the exported graph. int8 is calibrated on phantom slices at ``hw`` and exported
    with its Dice gate disabled (random weights: see module docstring); the numbers are still stored
    in the file's metadata.
    """
    from limbseg_rt.export.onnx_export import export_model
    from limbseg_rt.export.spec import Tolerance
    from limbseg_rt.models import save_checkpoint

    folder = cache_dir(root, arch, tuple(features), seed)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / "model.pth.tar"
    if not ckpt.is_file():
        save_checkpoint(
            reference_model(arch, tuple(features), seed),
            ckpt,
            extra={"arch": arch, "features": list(features), "seed": seed},
        )
    sets = None
    paths = {}
    for precision in precisions:
        out = folder / f"{precision}.onnx"
        if not out.is_file():
            if sets is None:
                calib, held = _slice_sets(tuple(hw))
                held = type(held)(held.images[:HELDOUT_SLICES], held.positions[:HELDOUT_SLICES], held.source)
                sets = (calib, held)
            export_model(
                arch,
                ckpt,
                out,
                features=features,
                precision=precision,
                calibration=sets,
                input_hw=tuple(hw),
                tolerance=None if precision == "fp32" else Tolerance(),
                measure_speed=False,
                threads=2,
            )
        paths[precision] = out
    return BenchModel(f"{arch} {'x'.join(map(str, features))}", arch, tuple(features), tuple(hw), paths, ckpt, False)


def demo_models(models_dir: Path | None = None) -> list[BenchModel]:
    """The bundled (trained) demo models found on disk, one ``BenchModel`` per architecture."""
    from limbseg_rt.runtime.model.bundled import list_bundled
    from limbseg_rt.runtime.model.metadata import read_metadata

    by_arch: dict[str, dict] = {}
    for m in list_bundled(models_dir):
        by_arch.setdefault(m.arch, {})[m.precision] = m.path
    out = []
    for arch, paths in by_arch.items():
        md = read_metadata(next(iter(paths.values())))
        ckpt = DEMO_CHECKPOINTS / f"{arch}.pth.tar"
        out.append(
            BenchModel(
                f"demo {arch}",
                arch,
                tuple(md.features),
                tuple(md.input_hw),
                paths,
                ckpt if ckpt.is_file() else None,
                True,
            )
        )
    return out


def seeded_slices(n: int, hw: tuple[int, int], seed: int = 0) -> np.ndarray:
    """float32 [n, 1, H, W] in [0, 1): timing input (speed does not depend on content for these nets)."""
    return np.random.default_rng(seed).random((n, 1, *hw), dtype=np.float32)
