"""Bundled demo models: lookup by name, choice of precision per provider, model paths as given.

Bundled files live in ``runtime/data/models/`` (``MODELS_DIR``) as ``{arch}-{precision}.onnx``
(arch in ``unet``, ``attention-unet``, ``sc-unet``; precision ``fp32`` or ``int8``) with a model card
``{arch}.md``. ``precision="auto"`` takes int8 on cpu/openvino (3-4x faster there, see docs/engines.md)
and fp32 on cuda/tensorrt (TensorRT's fp16 is a provider flag applied to the fp32 file, not a file).
Every function takes ``models_dir`` so tests can point it at a temporary folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from limbseg_rt.runtime.errors import ModelError
from limbseg_rt.runtime.hashing import sha256_file
from limbseg_rt.runtime.model.metadata import ARCHITECTURES, read_metadata

MODELS_DIR = Path(__file__).resolve().parent.parent / "data" / "models"
BUNDLED_PRECISIONS = ("fp32", "int8")
# Preferred precisions per provider for precision="auto", best first.
AUTO_PRECISION = {
    "cpu": ("int8", "fp32"),
    "openvino": ("int8", "fp32"),
    "cuda": ("fp32",),
    "tensorrt": ("fp32",),
}


@dataclass(frozen=True)
class BundledModel:
    """One bundled file. ``size_bytes`` in bytes; ``sha256()`` reads the file (about 0.1 s per 100 MB)."""

    arch: str
    precision: str
    path: Path
    size_bytes: int

    @property
    def card(self) -> Path | None:
        card = self.path.with_name(f"{self.arch}.md")
        return card if card.is_file() else None

    def sha256(self) -> str:
        return sha256_file(self.path)


def list_bundled(models_dir: Path | None = None) -> list[BundledModel]:
    """Bundled models present on disk, ordered by architecture then precision. Other files are ignored."""
    root = Path(models_dir) if models_dir is not None else MODELS_DIR
    found = []
    for arch in ARCHITECTURES:
        for precision in BUNDLED_PRECISIONS:
            path = root / f"{arch}-{precision}.onnx"
            if path.is_file():
                found.append(BundledModel(arch, precision, path, path.stat().st_size))
    return found


def _bundled_summary(models: list[BundledModel]) -> str:
    return ", ".join(f"{m.arch} ({m.precision})" for m in models) or "none"


def _normalise_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def looks_like_path(name_or_path: str) -> bool:
    return (
        name_or_path.lower().endswith(".onnx")
        or "/" in name_or_path
        or "\\" in name_or_path
        or Path(name_or_path).is_file()
    )


def resolve_model(name_or_path: str, *, precision: str = "auto", provider: str, models_dir: Path | None = None) -> Path:
    """The ``.onnx`` file to run.

    A path to an existing file is used as is; with ``precision`` other than ``auto`` it must match
    the precision in the file's metadata. A name (``unet``, ``attention-unet``, ``sc-unet``) picks
    the bundled file: ``auto`` -> the provider's preference (``AUTO_PRECISION``), else exactly
    ``precision``. ``provider``: the short name that will run it (not ``auto``).
    Raises ``ModelError`` listing what is bundled when nothing fits.
    """
    if provider not in AUTO_PRECISION:
        raise ValueError(f"provider must be one of {sorted(AUTO_PRECISION)} here, got {provider!r}")
    if precision not in ("auto", "fp32", "fp16", "int8", "bf16"):
        raise ModelError(f"unknown precision {precision!r}; use auto, fp32, fp16, int8 or bf16")
    # bf16 is not a file: the OpenVINO engine runs the fp32 file in bf16 (runners.create_runner).
    file_precision = "fp32" if precision == "bf16" else precision
    if looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        if precision != "auto":
            actual = read_metadata(path).precision
            if actual != file_precision:
                need = "an fp32 model (bf16 runs the fp32 file)" if precision == "bf16" else f"--precision {precision}"
                raise ModelError(f"{path.name} is a {actual} model, but {need} was asked for")
        return path
    arch = _normalise_name(name_or_path)
    models = list_bundled(models_dir)
    if arch not in ARCHITECTURES:
        raise ModelError(
            f"unknown model {name_or_path!r}: give a .onnx file or one of {', '.join(ARCHITECTURES)} "
            f"(bundled: {_bundled_summary(models)})"
        )
    have = {m.precision: m.path for m in models if m.arch == arch}
    if precision == "fp16":
        raise ModelError(
            "no fp16 models are bundled: TensorRT runs the fp32 model in fp16 with --provider tensorrt --precision fp16"
        )
    wanted = AUTO_PRECISION[provider] if precision == "auto" else (file_precision,)
    for p in wanted:
        if p in have:
            return have[p]
    other = [p for p in BUNDLED_PRECISIONS if p in have]
    hint = f"use --precision {other[0]} or give a .onnx file" if other else "give a .onnx file instead"
    raise ModelError(
        f"no bundled {arch} model in {'/'.join(wanted)} for {provider} (bundled: {_bundled_summary(models)}); {hint}"
    )


def bundled_files(name: str, models_dir: Path | None = None) -> tuple[str, dict[str, Path]]:
    """(architecture, precision -> file) of the bundled files a model name refers to; the dict is
    empty for a path or an unknown name (``resolve_model`` then says what is wrong)."""
    if looks_like_path(name):
        return "", {}
    arch = _normalise_name(name)
    return arch, {m.precision: m.path for m in list_bundled(models_dir) if m.arch == arch}
