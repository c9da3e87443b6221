"""Model metadata: what travels inside the ``.onnx`` file and what the runtime trusts.

The exporter writes one ``metadata_props`` entry, key ``METADATA_KEY``, value = JSON of
``ModelMetadata.to_dict()``. The runtime reads it back with ``read_metadata(path_or_model_proto)``
into this frozen dataclass; a missing or malformed entry is a ``ModelError``. Nothing the runtime
needs lives in a side file or in code defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from limbseg_rt.runtime.errors import ModelError
from limbseg_rt.runtime.model.input_spec import RESAMPLING_MODES, NormalisationSpec
from limbseg_rt.runtime.model.labels import LabelTable

METADATA_KEY = "limbseg_rt.metadata"
SCHEMA_VERSION = 1
ARCHITECTURES = ("unet", "attention-unet", "sc-unet")
PRECISIONS = ("fp32", "fp16", "int8")

# The canonical slice layout every model is trained and run with (see preprocess.py).
SLICE_LAYOUT = "RAS+ canonical array (x, y, z); axial slice k = volume[:, :, k] as [H, W] = [x, y]"


@dataclass(frozen=True)
class PositionSpec:
    """SC-UNet's position input (see position.py for the exact rule)."""

    bins: int = 100
    rule: str = "onehot[int(float32(p) * 100) - 1], -1 -> last bin; p clamped to [0, 1]"
    direction: str = "proximal_to_distal"  # p grows from hip (p -> 0+) to ankle (p = 1)

    def to_dict(self) -> dict:
        return {"bins": self.bins, "rule": self.rule, "direction": self.direction}

    @classmethod
    def from_dict(cls, d: dict) -> PositionSpec:
        spec = cls(int(d["bins"]), str(d["rule"]), str(d["direction"]))
        if spec.direction not in ("proximal_to_distal", "distal_to_proximal"):
            raise ValueError(f"unknown position direction {spec.direction!r}")
        return spec


@dataclass(frozen=True)
class ModelMetadata:
    """Everything the runtime needs to run a model correctly, read from the ONNX file.

    ``input_hw``: trained slice size [H, W] in pixels. ``pixel_spacing_mm``: trained in-plane pixel
    spacing (mm) when known (needed by ``--fit tile`` and ``--fit auto``), else None. ``resampling``:
    how slices were resized to ``input_hw`` in training, ``"exact"`` (linear, the paper's; files
    without the entry) or ``"antialias"`` (see preprocess.py); the runtime resizes the same way. ``inputs``/``outputs``: graph I/O
    names (``image`` [N,1,H,W] float32; ``position`` [N] float32 for sc-unet; ``logits``
    [N,C,H,W] float32 and optionally ``labels`` [N,H,W] uint8). ``parity``: the export's own parity
    results (free-form JSON dict).
    """

    architecture: str
    features: tuple[int, ...]
    in_channels: int
    labels: LabelTable
    input_hw: tuple[int, int]
    normalisation: NormalisationSpec
    precision: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    position: PositionSpec | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    resampling: str = "exact"
    slice_layout: str = SLICE_LAYOUT
    checkpoint_sha256: str = ""
    exporter: str = ""
    versions: dict = field(default_factory=dict)  # e.g. {"limbseg_rt": .., "torch": .., "onnx": .., "opset": 17}
    parity: dict = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def classes(self) -> int:
        return len(self.labels)

    @property
    def needs_position(self) -> bool:
        return "position" in self.inputs

    def to_dict(self) -> dict:
        return {
            "schema_version": self.schema_version,
            "architecture": self.architecture,
            "features": list(self.features),
            "in_channels": self.in_channels,
            "classes": self.classes,
            "labels": self.labels.to_list(),
            "input_hw": list(self.input_hw),
            "normalisation": self.normalisation.to_dict(),
            "position": self.position.to_dict() if self.position else None,
            "pixel_spacing_mm": list(self.pixel_spacing_mm) if self.pixel_spacing_mm else None,
            "resampling": self.resampling,
            "slice_layout": self.slice_layout,
            "precision": self.precision,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "checkpoint_sha256": self.checkpoint_sha256,
            "exporter": self.exporter,
            "versions": dict(self.versions),
            "parity": self.parity,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> ModelMetadata:
        if int(d.get("schema_version", -1)) != SCHEMA_VERSION:
            raise ValueError(
                f"metadata schema version {d.get('schema_version')!r}; this runtime reads version {SCHEMA_VERSION}"
            )
        md = cls(
            architecture=str(d["architecture"]),
            features=tuple(int(f) for f in d["features"]),
            in_channels=int(d["in_channels"]),
            labels=LabelTable.from_list(d["labels"]),
            input_hw=(int(d["input_hw"][0]), int(d["input_hw"][1])),
            normalisation=NormalisationSpec.from_dict(d["normalisation"]),
            precision=str(d["precision"]),
            inputs=tuple(str(s) for s in d["inputs"]),
            outputs=tuple(str(s) for s in d["outputs"]),
            position=PositionSpec.from_dict(d["position"]) if d.get("position") else None,
            pixel_spacing_mm=(float(d["pixel_spacing_mm"][0]), float(d["pixel_spacing_mm"][1]))
            if d.get("pixel_spacing_mm")
            else None,
            # Files exported before the entry existed were all trained with the exact linear resize.
            resampling=str(d.get("resampling", "exact")),
            slice_layout=str(d.get("slice_layout", SLICE_LAYOUT)),
            checkpoint_sha256=str(d.get("checkpoint_sha256", "")),
            exporter=str(d.get("exporter", "")),
            versions=dict(d.get("versions", {})),
            parity=dict(d.get("parity", {})),
        )
        if md.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {md.architecture!r}")
        if md.resampling not in RESAMPLING_MODES:
            raise ValueError(f"unknown resampling {md.resampling!r} (this runtime knows {', '.join(RESAMPLING_MODES)})")
        if md.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {md.precision!r}")
        if int(d.get("classes", md.classes)) != md.classes:
            raise ValueError("'classes' disagrees with the label table")
        if md.needs_position != (md.position is not None):
            raise ValueError("a 'position' input needs a position spec, and vice versa")
        _check_ranges(md)
        return md

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        return cls.from_dict(json.loads(text))


# Largest slice side (pixels) a model may declare: generous for 2D MRI slices (512-1024 in practice),
# and small enough that one slice's logits cannot by themselves exhaust memory.
MAX_INPUT_SIDE = 4096
MAX_CLASSES = 256  # labels are uint8


def _check_ranges(md: ModelMetadata) -> None:
    """``ValueError`` for numbers no usable model has (checked at load, before anything runs)."""
    h, w = md.input_hw
    if not (1 <= h <= MAX_INPUT_SIDE and 1 <= w <= MAX_INPUT_SIDE):
        raise ValueError(f"input size {h} x {w} is outside 1..{MAX_INPUT_SIDE} pixels")
    if md.in_channels < 1:
        raise ValueError(f"in_channels {md.in_channels} must be at least 1")
    if not 2 <= md.classes <= MAX_CLASSES:
        raise ValueError(f"{md.classes} classes: need 2..{MAX_CLASSES} (background + muscles)")
    if not md.features or any(f < 1 for f in md.features):
        raise ValueError(f"features {list(md.features)} must be positive")
    if not md.inputs or md.inputs[0] != "image" or set(md.inputs) - {"image", "position"}:
        raise ValueError(f"inputs {list(md.inputs)}: the first must be 'image', the only other 'position'")
    if "logits" not in md.outputs:
        raise ValueError(f"outputs {list(md.outputs)} lack 'logits'")


@dataclass(frozen=True)
class GraphTensor:
    """One graph input or output as an engine reports it: ``shape`` has an int per fixed axis and
    None per dynamic one; ``dtype`` is a numpy name (``float32``, ``uint8``, ...)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


# Expected (rank, dtype) of every tensor the metadata may name, and which axes are fixed by it.
_EXPECTED = {"image": (4, "float32"), "position": (1, "float32"), "logits": (4, "float32"), "labels": (3, "uint8")}


def check_graph(md: ModelMetadata, inputs: list[GraphTensor], outputs: list[GraphTensor]) -> None:
    """``ValueError`` when the graph's I/O disagree with the metadata: names (the graph's inputs are
    exactly ``md.inputs``; every ``md.outputs`` name exists), ranks, dtypes, and the fixed axes
    (image channels = ``in_channels``, image H x W = ``input_hw`` when fixed, logits channels =
    ``classes``)."""
    have_in = {t.name: t for t in inputs}
    if set(have_in) != set(md.inputs):
        raise ValueError(f"the graph's inputs {sorted(have_in)} are not the metadata's {sorted(md.inputs)}")
    have_out = {t.name: t for t in outputs}
    missing = [n for n in md.outputs if n not in have_out]
    if missing:
        raise ValueError(f"the graph has no output {missing[0]!r} (its outputs: {sorted(have_out)})")
    fixed = {
        ("image", 1): md.in_channels,
        ("image", 2): md.input_hw[0],
        ("image", 3): md.input_hw[1],
        ("logits", 1): md.classes,
    }
    for t in [have_in[n] for n in md.inputs] + [have_out[n] for n in md.outputs]:
        rank, dtype = _EXPECTED.get(t.name, (len(t.shape), t.dtype))
        if len(t.shape) != rank or t.dtype != dtype:
            raise ValueError(
                f"graph tensor {t.name!r} is {t.dtype} of rank {len(t.shape)}; expected {dtype} of rank {rank}"
            )
        for axis, dim in enumerate(t.shape):
            want = fixed.get((t.name, axis))
            if dim is not None and want is not None and dim != want:
                raise ValueError(f"graph tensor {t.name!r} has {dim} on axis {axis}; the metadata says {want}")


def metadata_from_props(props: dict[str, str], path: Path) -> ModelMetadata:
    """``ModelMetadata`` from a model's ``metadata_props`` as already loaded by an engine (same checks
    and messages as ``read_metadata``, prefixed with the file name)."""
    text = props.get(METADATA_KEY)
    if text is None:
        raise ModelError(
            f"{path.name}: model has no limbseg-rt metadata (key {METADATA_KEY!r}); export it with 'limbseg-rt export'"
        )
    try:
        return ModelMetadata.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{path.name}: model has malformed limbseg-rt metadata: {exc}") from None


def read_metadata(model) -> ModelMetadata:
    """Metadata of an ONNX model given as a path or an ``onnx.ModelProto``-like object.

    Paths are read with onnxruntime's model-metadata API (no ``onnx`` package needed at runtime).
    Raises ``ModelError`` naming the file when the metadata is missing or malformed.
    """
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        import onnxruntime as ort

        try:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
            raise ModelError(
                f"{path.name} is not a readable ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
            ) from None
        props = sess.get_modelmeta().custom_metadata_map
        where = path.name
    else:
        props = {p.key: p.value for p in model.metadata_props}
        where = "model"
    text = props.get(METADATA_KEY)
    if text is None:
        raise ModelError(
            f"{where} has no limbseg-rt metadata (key {METADATA_KEY!r}); export it with 'limbseg-rt export'"
        )
    try:
        return ModelMetadata.from_json(text)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{where} has malformed limbseg-rt metadata: {exc}") from None
