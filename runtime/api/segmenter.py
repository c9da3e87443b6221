"""``Segmenter``: a model loaded once on an execution provider, segmenting scans one after another
(read -> pipeline -> analysis -> report), writing nothing."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from limbseg_rt.runtime.api.result import (
    FLAG_EMPTY,
    FLAG_FALLBACK,
    FLAG_FOV_CUT,
    FLAG_SINGLE_SLICE,
    SegmentationResult,
)
from limbseg_rt.runtime.errors import InputError
from limbseg_rt.runtime.hashing import sha256_file
from limbseg_rt.runtime.inference.pipeline import (
    DEFAULT_MAX_BATCH,
    PipelineOptions,
    check_limb_range,
    segment_canonical,
)
from limbseg_rt.runtime.report.run_report import (
    Report,
    muscle_stats,
    peak_rss_mib,
    runtime_versions,
)

if TYPE_CHECKING:
    from limbseg_rt.runtime.io.nifti import ImageProps


class Segmenter:
    """A model loaded on an execution provider, ready to segment scans one after another.

    ``model``: ``"unet"``, ``"attention-unet"``, ``"sc-unet"`` (bundled) or a path to a
    limbseg-rt ``.onnx`` file. ``provider``: ``"auto"``, ``"tensorrt"``, ``"cuda"``,
    ``"openvino"``, ``"cpu"``. ``precision``: ``"auto"``, ``"fp32"``, ``"fp16"``, ``"int8"``
    (bundled models). ``allow_fallback``: accept a slower provider if the requested one is not
    available (reported). ``batch_size``: slices per model call or ``"auto"`` (from a memory
    budget of ``memory_budget_mb``). ``fit``: ``"auto"`` (default), ``"resize"`` or ``"tile"``
    (see pipeline.py; the report's ``pipeline.fit`` says which ran and ``fit_reason`` why).
    """

    def __init__(
        self,
        model: str | os.PathLike = "unet",
        *,
        provider: str = "auto",
        precision: str = "auto",
        allow_fallback: bool = False,
        threads: int | None = None,
        device_id: int = 0,
        batch_size: int | str = "auto",
        fit: str = "auto",
        memory_budget_mb: float = 512.0,
        max_batch: int = DEFAULT_MAX_BATCH,
        tile_overlap: float = 0.5,
        cache_dir: str | os.PathLike | None = None,
    ):
        from limbseg_rt.runtime.engine.runners import create_runner

        self._options = PipelineOptions(
            fit=fit,
            batch_size=batch_size,
            memory_budget_mb=memory_budget_mb,
            max_batch=max_batch,
            tile_overlap=tile_overlap,
        )
        t0 = time.perf_counter()
        # Precision is resolved by create_runner after the provider (fp16 on TensorRT = its fp16 mode).
        self._runner = create_runner(
            model,
            provider=provider,
            allow_fallback=allow_fallback,
            threads=threads,
            device_id=device_id,
            cache_dir=cache_dir,
            precision=precision,
            max_batch=max(max_batch, batch_size if isinstance(batch_size, int) else 1),
        )
        self.load_seconds = time.perf_counter() - t0
        self.model_path = Path(self._runner.model_path)
        self.model_sha256 = self._runner.model_sha256
        self._requested = {
            "model": str(model),
            "provider": provider,
            "precision": precision,
            "allow_fallback": allow_fallback,
            "threads": threads,
            "device_id": device_id,
        }

    # ------------------------------------------------------------------ properties
    @property
    def metadata(self):
        return self._runner.metadata

    @property
    def provider(self) -> str:
        """The provider actually running the model (read back from the engine)."""
        return self._runner.provider

    @property
    def precision(self) -> str:
        return self._runner.precision

    def describe(self) -> dict:
        return self._runner.describe()

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        runner, self._runner = getattr(self, "_runner", None), None
        if runner is not None:
            runner.close()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ work
    def segment(
        self,
        source,
        *,
        limb_range: tuple[float, float] | None = None,
        read_options=None,
        progress: Callable[[int, int], None] | None = None,
        series: str | int | None = None,
        analysis=None,
        keep_image: bool = False,
    ) -> SegmentationResult:
        """Segment one scan (a NIfTI path, a nibabel image, or a DICOM folder / .zip / file). Writes nothing.

        ``limb_range``: ``(a, b)``, the part of the limb the scan covers (0 = hip, 1 = ankle),
        used by SC-UNet. ``progress(done, total)``: called after each batch of slices.
        ``series``: SeriesNumber or SeriesInstanceUID when a DICOM input holds several series.
        ``analysis``: an ``AnalysisOptions`` (``runtime/analysis/measures.py``) to add sides, the 3D
        clean-up and the per muscle x side measures (``report.analysis``); None (default) skips it.
        ``keep_image``: keep the canonical volume in ``result.image_canonical`` (4 bytes per voxel
        held as long as the result), so QC pictures need not read the scan again.
        """
        from limbseg_rt.runtime.io.nifti import ReadOptions

        if self._runner is None:
            raise RuntimeError("this Segmenter is closed")
        if limb_range is not None:
            limb_range = check_limb_range(limb_range)
        options = read_options if read_options is not None else ReadOptions()
        md = self._runner.metadata

        t0 = time.perf_counter()
        canon, props, input_info = _read_source(source, options, series)
        t_read = time.perf_counter() - t0

        pipe_options = dataclasses.replace(self._options, limb_range=limb_range)
        t1 = time.perf_counter()
        run = segment_canonical(
            canon,
            md,
            self._runner.predict,
            spacing_xy_mm=props.canonical_spacing[:2],
            options=pipe_options,
            progress=progress,
        )
        t_slices = time.perf_counter() - t1

        t2 = time.perf_counter()
        labels_c, analysis_result, analysis_settings = run.labels, None, None
        if analysis is not None:  # issue 19: sides, clean-up and per muscle x side measures
            from limbseg_rt.runtime.analysis.measures import analyse_scan, options_summary

            analysis_result = analyse_scan(run.labels, canon, props, md.labels, analysis)
            labels_c, analysis_settings = analysis_result.labels, options_summary(analysis)
        labels_img = labels_image(labels_c, props, md.labels)
        axis = props.slice_axis
        stats = muscle_stats(
            labels_c, canon, md.labels, props.voxel_volume_mm3, input_axis=axis, input_flipped=props.ornt[axis][1] == -1
        )
        t_post_extra = time.perf_counter() - t2

        engine_info = self._runner.describe()
        fallback = engine_info.get("fallback")
        flags, warnings = _flags_and_warnings(run, stats, props, md, limb_range, fallback)
        if analysis_result is not None:
            warnings.extend(analysis_result.side_info["notes"])

        manifest = {
            "model": {
                "requested": self._requested["model"],
                "path": str(self.model_path),
                "file": self.model_path.name,
                "sha256": self.model_sha256,
                "metadata": _metadata_summary(md),
            },
            "engine": {
                "provider": self._runner.provider,
                "precision": self._runner.precision,
                "requested_provider": self._requested["provider"],
                "requested_precision": self._requested["precision"],
                "allow_fallback": self._requested["allow_fallback"],
                "fallback": fallback or None,
                "details": engine_info,
            },
            "pipeline": {
                "fit": run.fit,
                "fit_requested": pipe_options.fit,
                "fit_reason": run.fit_reason,
                "stray_voxels_relabelled": run.strays.voxels if run.strays else None,
                "batch_size": run.batch_size,
                "batch_size_requested": pipe_options.batch_size,
                "memory_budget_mb": pipe_options.memory_budget_mb,
                "tile_overlap": pipe_options.tile_overlap if run.fit == "tile" else None,
                "resampled_hw": list(run.resampled_hw) if run.resampled_hw else None,
                "limb_range": list(limb_range) if limb_range else None,
                "intensity_window": list(run.window),
                "positions": _positions_summary(run.positions, md),
            },
            "timings_s": {
                "model_load": self.load_seconds,
                "read": t_read,
                "preprocess": run.timings["preprocess"],
                "infer": run.timings["infer"],
                "postprocess": run.timings["postprocess"] + t_post_extra,
                "write": None,
                "slices_wall": t_slices,
                "note": "preprocess runs in a background thread overlapping infer; stage sums can exceed wall time",
            },
            "peak_rss_mib": peak_rss_mib(),
            "versions": runtime_versions(),
            "input": {**input_info, "geometry": _geometry(props, canon.shape)},
            "report_units": {"volume": "mL", "mean_intensity": "input values after scl_slope/inter"},
            "analysis": analysis_settings,
        }
        report = Report(stats, manifest, flags, warnings, analysis_result)
        return SegmentationResult(labels_img, labels_c, props, report, md.labels, canon if keep_image else None)


def labels_image(labels_canonical: np.ndarray, props, table):
    """Label ``Nifti1Image`` (uint8; uint16 above 254 classes) of canonical labels on the input grid.

    Built by ``labelio.label_image``, as the file ``save`` writes (qform/sform and codes copied,
    intent label), but in memory: nothing is written. ``.affine`` is the input's affine; when that was
    assumed (``--assume-orientation``, no geometry in the file) nibabel marks it as an sform (code 2)
    in memory, whereas ``save`` writes the file with the input's own (zero) codes.
    """
    from limbseg_rt.runtime.io.geometry import from_canonical
    from limbseg_rt.runtime.io.labelio import label_dtype, label_image

    dtype = label_dtype(table)
    data = np.asfortranarray(from_canonical(labels_canonical, props).astype(dtype, copy=False))
    return label_image(data, props, table, dtype, affine=np.asarray(props.affine, dtype=np.float64))


def _geometry(props, canonical_shape) -> dict:
    header = props.header
    return {
        "shape": list(props.shape),
        "file_shape": list(props.file_shape),
        "canonical_shape": [int(s) for s in canonical_shape],
        "spacing_mm": list(props.spacing),
        "canonical_spacing_mm": list(props.canonical_spacing),
        "voxel_volume_mm3": props.voxel_volume_mm3,
        "orientation": "".join(props.orientation),
        "slice_axis": props.slice_axis,
        "tilt_deg": props.tilt_deg,
        "affine_source": props.affine_source,
        "qform_code": int(header["qform_code"]) if header is not None else None,
        "sform_code": int(header["sform_code"]) if header is not None else None,
        "affine": np.asarray(props.affine, dtype=float).tolist(),
        "nifti_version": props.nifti_version,
        "volume_index": props.volume_index,
    }


def _positions_summary(positions, md) -> dict | None:
    """SC-UNet positions used: the direction rule and the values at both ends of the scan."""
    if positions is None:
        return None
    return {
        "direction": md.position.direction if md.position else None,
        "p_most_inferior_slice": float(positions[0]),
        "p_most_superior_slice": float(positions[-1]),
    }


def _metadata_summary(md) -> dict:
    d = md.to_dict()
    d["labels"] = f"{len(md.labels)} classes (table stored in the model)"
    return d


def _read_source(source, options, series=None) -> tuple[np.ndarray, ImageProps, dict]:
    """(canonical float32 volume, ImageProps, input description) for a path or a nibabel image."""
    from limbseg_rt.runtime.io.dicom import looks_like_dicom
    from limbseg_rt.runtime.io.nifti import from_nibabel, read_image

    if isinstance(source, (str, os.PathLike)) and looks_like_dicom(source):
        from limbseg_rt.runtime.io.dicom import read_dicom

        path = Path(source)
        canon, props, info = read_dicom(path, series, options=options)
        digest = sha256_file(path) if path.is_file() else None
        return canon, props, {"path": str(path), "name": path.name, "sha256": digest, "dicom": info.to_dict()}
    if series is not None:
        raise InputError(f"{source}: --series applies to DICOM inputs only")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        canon, props = read_image(path, options=options)
        return canon, props, {"path": str(path), "name": path.name, "sha256": sha256_file(path)}
    if hasattr(source, "affine") and hasattr(source, "dataobj"):
        canon, props = from_nibabel(source, options=options)
        filename = source.get_filename() if hasattr(source, "get_filename") else None
        return canon, props, {"path": filename, "name": Path(filename).name if filename else None, "sha256": None}
    raise InputError(f"cannot segment a {type(source).__name__}; give a NIfTI path or a nibabel image")


def _flags_and_warnings(run, stats, props, md, limb_range, fallback) -> tuple[list[str], list[str]]:
    """Machine-readable flags and one-line warnings for the report (reader's first, then ours)."""
    flags, warnings = [], [str(w) for w in props.warnings]
    if run.empty:
        flags.append(FLAG_EMPTY)
    warnings.extend(run.notes)
    cut = [m.code for m in stats if m.touches_first_slice or m.touches_last_slice]
    if run.labels.shape[2] == 1:
        flags.append(FLAG_SINGLE_SLICE)
        warnings.append("a single slice was segmented: each 'volume' is the muscle's area times the slice thickness")
    elif cut:
        flags.append(FLAG_FOV_CUT)
        listed = ", ".join(cut[:8]) + (f" and {len(cut) - 8} more" if len(cut) > 8 else "")
        warnings.append(
            f"{len(cut)} muscle(s) reach the first or last slice ({listed}): the field of view "
            "cut them, so their volumes are lower bounds"
        )
    if limb_range is not None and not md.needs_position:
        warnings.append(f"the limb range was ignored: the {md.architecture} model takes no slice position")
    if fallback:
        flags.append(FLAG_FALLBACK)
        warnings.append(str(fallback))
    return flags, warnings
