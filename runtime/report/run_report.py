"""The per-muscle volume report and the run manifest (JSON + CSV).

Volumes: ``voxels x voxel volume`` where the voxel volume is ``|det(affine[:3, :3])|`` mm^3 of the
input image, reported in mL (1 mL = 1000 mm^3). Slice ranges are given twice:

- ``z_first``/``z_last``: canonical RAS+ slice indices (0 = most inferior slice);
- ``input_first``/``input_last``: indices along the input file's own axis ``input_axis`` (the axis
  closest to superior-inferior), i.e. what a viewer showing the input file calls that slice.

``touches_first_slice``/``touches_last_slice``: the muscle reaches the most inferior / most
superior slice of the scan, so the field of view probably cut it and its volume is a lower bound.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import resource
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from limbseg_rt.runtime.model.labels import LabelTable

REPORT_SCHEMA = "limbseg-rt.report/2"
CSV_COLUMNS = (
    "index",
    "code",
    "name",
    "volume_ml",
    "voxels",
    "z_first",
    "z_last",
    "input_axis",
    "input_first",
    "input_last",
    "mean_intensity",
    "touches_first_slice",
    "touches_last_slice",
)

FIELD_NOTES = {
    "volume_ml": "voxels x |det(affine[:3, :3])| / 1000 (mL) of the input grid",
    "mean_intensity": "mean of the input's values (after scl_slope/scl_inter) inside the muscle",
    "z_first/z_last": "canonical RAS+ slice indices, 0 = most inferior slice",
    "input_axis/input_first/input_last": "the same slices as indices along axis input_axis of the input file",
    "touches_first_slice/touches_last_slice": "muscle reaches the most inferior / most superior slice: "
    "cut by the field of view, volume is a lower bound",
}


@dataclass(frozen=True)
class MuscleStats:
    """One muscle's numbers. Slice fields are None when the muscle was not found."""

    index: int
    code: str
    name: str
    voxels: int
    volume_ml: float
    mean_intensity: float | None
    z_first: int | None
    z_last: int | None
    input_axis: int | None
    input_first: int | None
    input_last: int | None
    touches_first_slice: bool
    touches_last_slice: bool


def muscle_stats(
    labels: np.ndarray,
    intensities: np.ndarray,
    table: LabelTable,
    voxel_volume_mm3: float,
    *,
    input_axis: int | None = None,
    input_flipped: bool = False,
) -> list[MuscleStats]:
    """Statistics for every muscle of ``table`` (background excluded), found or not.

    ``labels``: uint8 ``[X, Y, Z]`` canonical. ``intensities``: the raw (scaled) input values on
    the same grid, any real dtype; non-finite voxels are left out of the mean.
    """
    lab = np.asarray(labels)
    if lab.shape != np.shape(intensities):
        raise ValueError(f"labels {lab.shape} and intensities {np.shape(intensities)} differ in shape")
    n_classes = len(table)
    nz = lab.shape[2]
    counts = np.zeros(n_classes, dtype=np.int64)
    finite_counts = np.zeros(n_classes, dtype=np.int64)
    sums = np.zeros(n_classes, dtype=np.float64)
    # Which classes appear in each slice: [Z, C]. Everything is accumulated one slice at a time so
    # no whole-volume temporary (float64 copy, finite mask) ever exists: peak memory stays flat in Z.
    present = np.zeros((nz, n_classes), dtype=bool)
    for z in range(nz):
        lz = lab[:, :, z].ravel()
        cz = np.bincount(lz, minlength=n_classes)[:n_classes]
        counts += cz
        present[z] = cz > 0
        vz = np.asarray(intensities[:, :, z], dtype=np.float64).ravel()
        finite = np.isfinite(vz)
        if finite.all():
            sums += np.bincount(lz, weights=vz, minlength=n_classes)[:n_classes]
            finite_counts += cz
        else:
            sums += np.bincount(lz[finite], weights=vz[finite], minlength=n_classes)[:n_classes]
            finite_counts += np.bincount(lz[finite], minlength=n_classes)[:n_classes]

    out = []
    for lab_info in table.muscles:
        i = lab_info.index
        zs = np.flatnonzero(present[:, i])
        found = zs.size > 0
        z_first = int(zs[0]) if found else None
        z_last = int(zs[-1]) if found else None
        if found and input_axis is not None:
            a, b = (nz - 1 - z_last, nz - 1 - z_first) if input_flipped else (z_first, z_last)
        else:
            a = b = None
        out.append(
            MuscleStats(
                index=i,
                code=lab_info.code,
                name=lab_info.name,
                voxels=int(counts[i]),
                volume_ml=float(counts[i]) * float(voxel_volume_mm3) / 1000.0,
                mean_intensity=float(sums[i] / finite_counts[i]) if finite_counts[i] else None,
                z_first=z_first,
                z_last=z_last,
                input_axis=input_axis if found else None,
                input_first=a,
                input_last=b,
                touches_first_slice=bool(found and z_first == 0),
                touches_last_slice=bool(found and z_last == nz - 1),
            )
        )
    return out


MANIFEST_KEYS = (
    "model",
    "engine",
    "pipeline",
    "timings_s",
    "peak_rss_mib",
    "versions",
    "input",
    "report_units",
    "analysis",
    "outputs",
)


@dataclass(frozen=True)
class Manifest:
    """How a report was made: model (file, SHA-256, metadata), engine (provider and precision that
    ran, fallback), pipeline settings, per-stage timings (s), peak RSS (MiB), versions, input
    (path, SHA-256, geometry), units, the analysis settings (None when the analysis did not run) and
    the files written (None until saved). Read like a dict: ``manifest["engine"]["provider"]``.
    The schema of every field: ``report.schema.json`` beside this module.
    """

    model: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)
    pipeline: dict = field(default_factory=dict)
    timings_s: dict = field(default_factory=dict)
    peak_rss_mib: float | None = None
    versions: dict = field(default_factory=dict)
    input: dict = field(default_factory=dict)
    report_units: dict = field(default_factory=dict)
    analysis: dict | None = None
    outputs: dict | None = None
    extra: dict = field(default_factory=dict)  # keys added by later stages; each must be in the schema

    @classmethod
    def from_dict(cls, d: dict) -> Manifest:
        """Known keys become fields, any other key goes to ``extra`` (and back to the top level in JSON)."""
        return cls(
            **{k: v for k, v in d.items() if k in MANIFEST_KEYS},
            extra={k: v for k, v in d.items() if k not in MANIFEST_KEYS},
        )

    def __getitem__(self, key: str):
        if key in MANIFEST_KEYS:
            return getattr(self, key)
        return self.extra[key]

    def get(self, key: str, default=None):
        return getattr(self, key) if key in MANIFEST_KEYS else self.extra.get(key, default)

    def to_dict(self) -> dict:
        d = {**{k: getattr(self, k) for k in MANIFEST_KEYS}, **self.extra}
        if d["analysis"] is None:
            del d["analysis"]
        if d["outputs"] is None:
            del d["outputs"]
        return d

    def with_extra(self, key: str, value) -> Manifest:
        """A copy with ``key`` (not a field; it must be in the schema) set to ``value``."""
        return replace(self, extra={**self.extra, key: value})

    def saved(self, outputs: dict, write_s: float, peak_rss: float) -> Manifest:
        """A copy with the files written, the write time (s) and the peak RSS (MiB) after saving."""
        return replace(
            self, outputs=dict(outputs), timings_s={**self.timings_s, "write": write_s}, peak_rss_mib=peak_rss
        )


@dataclass(frozen=True)
class Report:
    """The report of one segmentation: per-muscle numbers, flags, warnings, the run manifest and,
    when the analysis ran, the per muscle x side measures (``analysis``: an object with
    ``to_dict()`` and ``to_csv()``, see ``runtime/analysis/measures.py``).

    ``flags``: machine-readable conditions (``"empty_image"``, ``"fov_cut"``, ``"provider_fallback"``).
    ``warnings``: human-readable sentences. Dict-like for reading: ``report["manifest"]``.
    A dict given as ``manifest`` becomes a ``Manifest``; lists become tuples.
    """

    muscles: tuple[MuscleStats, ...]
    manifest: Manifest
    flags: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    analysis: object | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "muscles", tuple(self.muscles))
        if isinstance(self.manifest, dict):
            object.__setattr__(self, "manifest", Manifest.from_dict(self.manifest))
        object.__setattr__(self, "flags", tuple(self.flags))
        object.__setattr__(self, "warnings", tuple(self.warnings))

    def with_warning(self, text: str) -> Report:
        """A copy with one more warning."""
        return replace(self, warnings=(*self.warnings, text))

    @property
    def found(self) -> list[MuscleStats]:
        """Muscles with at least one voxel."""
        return [m for m in self.muscles if m.voxels > 0]

    @property
    def total_volume_ml(self) -> float:
        return float(sum(m.volume_ml for m in self.muscles))

    def to_dict(self) -> dict:
        d = {
            "schema": REPORT_SCHEMA,
            "fields": FIELD_NOTES,
            "muscles": [asdict(m) for m in self.muscles],
            "totals": {
                "muscles_found": len(self.found),
                "voxels": int(sum(m.voxels for m in self.muscles)),
                "volume_ml": self.total_volume_ml,
            },
            "flags": list(self.flags),
            "warnings": list(self.warnings),
            "manifest": self.manifest.to_dict(),
        }
        if self.analysis is not None:
            d["analysis"] = self.analysis.to_dict()  # type: ignore[attr-defined]
        return d

    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n"

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for m in self.muscles:
            row = asdict(m)
            row["volume_ml"] = f"{m.volume_ml:.4f}"
            if m.mean_intensity is not None:
                row["mean_intensity"] = f"{m.mean_intensity:.4f}"
            writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
        return buf.getvalue()

    def to_measures_csv(self) -> str | None:
        """The per muscle x side table (long form), or None when the analysis did not run."""
        return self.analysis.to_csv() if self.analysis is not None else None  # type: ignore[attr-defined]


def schema_path() -> Path:
    """The JSON schema (draft 2020-12) every written report follows."""
    return Path(__file__).with_name("report.schema.json")


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` as a one-file ``outputs.OutputSet`` (temporary beside it, then a rename)."""
    from limbseg_rt.runtime.io.outputs import write_text_file

    return write_text_file(path, text)


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB.

    Linux: ``VmHWM`` from ``/proc/self/status``. Not ``ru_maxrss``: Linux carries the high-water mark
    of the forking parent across ``fork`` + ``exec``, so a run started by a 3 GB process (a workstation
    application, a pytest session) would report 3 GB (measured). Elsewhere ``ru_maxrss`` (bytes on
    macOS, KiB otherwise).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return float(peak) / (1024 * 1024 if sys.platform == "darwin" else 1024)


def runtime_versions() -> dict:
    """Versions of what produced the result (read from already-imported or installed packages)."""
    import nibabel
    import onnxruntime

    from limbseg_rt import __version__

    return {
        "limbseg_rt": __version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "nibabel": nibabel.__version__,
        "python": platform.python_version(),
    }
