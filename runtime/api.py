"""The embedding API: build a ``Segmenter`` once, segment many scans, save when you choose.

    from limbseg_rt.runtime.api import Segmenter

    with Segmenter("unet", provider="cpu") as seg:
        result = seg.segment("thigh.nii.gz")          # nothing written yet
        print(result.report.total_volume_ml)
        result.save("thigh_labels.nii.gz", report_json="thigh_report.json", csv="thigh_volumes.csv")

``segment`` accepts a path or an in-memory nibabel image and never touches the disk (beyond
reading the input). Labels come back on the input's own grid (same shape, affine, qform/sform).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from limbseg_rt.runtime.errors import InputError, OutputError
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

FLAG_EMPTY = "empty_image"
FLAG_FOV_CUT = "fov_cut"
FLAG_FALLBACK = "provider_fallback"
FLAG_SINGLE_SLICE = "single_slice"


@dataclass
class SegmentationResult:
    """One segmentation. ``labels``: uint8 ``Nifti1Image`` on the input grid; ``labels_canonical``:
    uint8 ``[X, Y, Z]`` RAS+ array; ``props``: the input's ``ImageProps``; ``report``: ``Report``;
    ``image_canonical``: the scan's float32 canonical volume, kept only when ``segment`` was asked to
    (``keep_image=True``: the QC pictures need the intensities), else None.
    """

    labels: object
    labels_canonical: np.ndarray
    props: object
    report: Report
    table: object = field(repr=False, default=None)
    image_canonical: np.ndarray | None = field(repr=False, default=None)

    @property
    def empty(self) -> bool:
        return FLAG_EMPTY in self.report.flags

    def save(
        self,
        out_path: str | os.PathLike,
        report_json: str | os.PathLike | None = None,
        csv: str | os.PathLike | None = None,
        *,
        input_path: str | os.PathLike | None = None,
        measures_csv: str | os.PathLike | None = None,
        split_sides: bool = False,
    ) -> dict[str, Path]:
        """Write the labels (atomic, verified, with ITK-SNAP/Slicer label files) and the reports.

        One ``outputs.OutputSet``: refuses (``OutputError``) to write over the input file, or any
        output onto another; all files are written to temporaries and published together (report
        last), so a failure leaves any earlier files at these paths untouched. Returns the paths written
        (keys ``labels``, ``itksnap``, ``slicer``, and ``report`` / ``csv`` when asked for).
        With an analysis (``segment(..., analysis=...)``): ``measures_csv`` writes the per muscle x
        side table; ``split_sides`` writes the label map with a right and a left label per muscle
        (``runtime/analysis/split.py``).
        """
        from limbseg_rt.runtime.io.outputs import OutputSet

        src = input_path or self.report.manifest.get("input", {}).get("path")
        if (measures_csv is not None or split_sides) and self.report.analysis is None:
            raise ValueError("measures_csv and split_sides need segment(..., analysis=AnalysisOptions())")
        with OutputSet(inputs=[src] if src else ()) as out:
            declare_outputs(out, out_path, report_json, csv, measures_csv=measures_csv)
            out.check()
            return self.write_outputs(out, split_sides=split_sides)

    def write_outputs(
        self, out, *, before_commit: Callable | None = None, split_sides: bool = False
    ) -> dict[str, Path]:
        """Write this result into a declared, checked ``OutputSet`` and publish it (report last).

        ``out`` must hold ``labels`` (and ``itksnap``/``slicer``, ``csv``, ``measures_csv``, ``report``
        as wanted), e.g. from ``declare_outputs``. ``before_commit(out)`` may add more staged files
        (QC). ``split_sides``: the label map gets a right and a left label per muscle (needs the
        analysis). Returns the paths published.
        """
        from limbseg_rt.runtime.io.labelio import stage_labels

        t0 = time.perf_counter()
        labels, table = self.labels_canonical, self.table
        if split_sides:  # issue 19: a right and a left label per muscle
            from limbseg_rt.runtime.analysis.split import split_labels, split_table

            labels = split_labels(labels, self.report.analysis.sides, len(table.muscles))  # type: ignore[attr-defined]
            table = split_table(table)
        stage_labels(out, labels, self.props, table=table)
        outputs = {k: str(v) for k, v in out.paths.items()}
        self.report = dataclasses.replace(
            self.report, manifest=self.report.manifest.saved(outputs, time.perf_counter() - t0, peak_rss_mib())
        )
        if "measures_csv" in out:
            out.write_text("measures_csv", self.report.to_measures_csv() or "")
        if "csv" in out:
            out.write_text("csv", self.report.to_csv())
        if "report" in out:
            out.write_text("report", self.report.to_json())
        if before_commit is not None:
            before_commit(out)
        return out.commit()

    def save_seg(self, path: str | os.PathLike, *, seg_type: str = "binary", record_as=None) -> Path | None:
        """Write a DICOM SEG over the source series (DICOM inputs only; see docs/dicom.md).

        Returns the path, or None when no muscle was found (a SEG needs a segment). The model's
        name, SHA-256 and whether it is a bundled demo model go into the SEG's algorithm
        identification and SeriesDescription. The report's ``manifest.dicom_seg`` records it
        (``record_as``: the path to record there when ``path`` is a temporary).
        """
        from limbseg_rt.runtime.io.dicom.seg import AlgorithmInfo, write_seg
        from limbseg_rt.runtime.model.bundled import MODELS_DIR

        model = self.report.manifest["model"]
        model_path = Path(model["path"]).resolve()
        demo = model_path.parent == MODELS_DIR.resolve()
        version = self.report.manifest.get("versions", {}).get("limbseg_rt", "unknown")
        algo = AlgorithmInfo(f"limbseg-rt {model['metadata']['architecture']}", str(version), model["sha256"], demo)
        out = write_seg(self.labels_canonical, self.props, path, table=self.table, algorithm=algo, seg_type=seg_type)
        recorded = (record_as or out) if out else None
        self.report = dataclasses.replace(
            self.report,
            manifest=self.report.manifest.with_extra(
                "dicom_seg", {"path": str(recorded) if recorded else None, "type": seg_type, "demo_model": demo}
            ),
        )
        return out


def declare_outputs(out, labels, report_json=None, csv=None, *, measures_csv=None) -> None:
    """Declare one run's outputs in an ``OutputSet``: labels + side files, CSV, the per muscle x side
    CSV, then the report (published last)."""
    from limbseg_rt.runtime.io.labelio import declare_label_outputs

    declare_label_outputs(out, labels)
    if csv is not None:
        out.add("csv", csv, what="volume CSV")
    if measures_csv is not None:
        out.add("measures_csv", measures_csv, what="per muscle x side CSV")
    if report_json is not None:
        out.add("report", report_json, what="report", last=True)


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


def default_output_paths(scan: str | os.PathLike) -> dict[str, Path]:
    """``<stem>_labels.nii.gz``, ``<stem>_report.json``, ``<stem>_volumes.csv`` next to the scan."""
    from limbseg_rt.runtime.io.outputs import nifti_stem

    scan = Path(scan)
    name = nifti_stem(scan.name, suffixes=(".nii.gz", ".nii", ".gz", ".dcm", ".zip"))
    return {
        "labels": scan.with_name(f"{name}_labels.nii.gz"),
        "report": scan.with_name(f"{name}_report.json"),
        "csv": scan.with_name(f"{name}_volumes.csv"),
        "seg": scan.with_name(f"{name}_seg.dcm"),
    }


def segment_file(
    scan: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    report_json: str | os.PathLike | None = None,
    csv: str | os.PathLike | None = None,
    limb_range: tuple[float, float] | None = None,
    read_options=None,
    progress: Callable[[int, int], None] | None = None,
    segmenter: Segmenter | None = None,
    qc: bool = False,
    series: str | int | None = None,
    seg: str | os.PathLike | None = None,
    seg_type: str = "binary",
    analysis=None,
    measures_csv: str | os.PathLike | None = None,
    split_sides: bool = False,
    **segmenter_kwargs,
) -> tuple[SegmentationResult, dict[str, Path]]:
    """Segment a NIfTI file and write labels, JSON report and CSV (defaults: next to the scan).

    Output paths are checked before any work (never the input, folders must exist); files are
    written only after the segmentation succeeded. Uses ``segmenter`` if given, else builds one
    from ``segmenter_kwargs`` (see ``Segmenter``) and closes it afterwards.
    A DICOM input (folder, ``.zip``, file) also gets a DICOM SEG (``seg``, default
    ``<name>_seg.dcm`` beside the input; ``seg_type`` ``"binary"`` or ``"labelmap"``); ``series``
    picks its series. Returns the result and the paths written. ``qc``: also write the QC PNGs and
    ``<stem>_report.html`` beside the labels (``runtime/qc``; needs the ``qc`` extra, checked first).
    ``analysis`` (an ``AnalysisOptions``) adds the
    per muscle x side measures and writes them to ``measures_csv`` (default ``<stem>_muscles.csv``);
    ``split_sides`` writes the side-split label map.
    """
    from limbseg_rt.runtime.io.dicom import looks_like_dicom

    if qc:
        from limbseg_rt.runtime.qc.write import check_available

        check_available()
    if analysis is not None and analysis.clean:  # issue 19: fail before segmenting, not after
        from limbseg_rt.runtime.analysis.cleanup import check_available as check_cleanup_available

        check_cleanup_available()
    scan = Path(scan)
    is_dicom = looks_like_dicom(scan)
    if not (scan.is_file() or (scan.is_dir() and is_dicom)):
        raise InputError(f"input scan not found: {scan}")
    from limbseg_rt.runtime.io.outputs import OutputSet

    defaults = default_output_paths(scan)
    if seg is not None and not is_dicom:
        raise OutputError(f"{seg}: a DICOM SEG needs a DICOM input; {scan} is not DICOM")
    if analysis is not None and measures_csv is None:
        measures_csv = defaults["csv"].with_name(defaults["csv"].name.replace("_volumes.csv", "_muscles.csv"))
    out_set = OutputSet(inputs=[scan])
    declare_outputs(
        out_set,
        Path(out) if out is not None else defaults["labels"],
        Path(report_json) if report_json is not None else defaults["report"],
        Path(csv) if csv is not None else defaults["csv"],
        measures_csv=measures_csv if analysis is not None else None,
    )
    if is_dicom:
        out_set.add("seg", Path(seg) if seg is not None else defaults["seg"], what="DICOM SEG")
    if not out_set.paths["labels"].name.lower().endswith((".nii.gz", ".nii")):
        raise OutputError(
            f"{out_set.paths['labels']}: a label file name must end in .nii.gz or .nii; choose another output name"
        )
    out_set.check()  # every output location is usable before the segmentation starts
    own = segmenter is None
    engine = segmenter if segmenter is not None else Segmenter(**segmenter_kwargs)
    try:
        result = engine.segment(
            scan,
            limb_range=limb_range,
            read_options=read_options,
            progress=progress,
            series=series,
            analysis=analysis,
            keep_image=qc,
        )
    finally:
        if own:
            engine.close()
    stage_qc = None
    if qc:  # the QC PNGs and HTML page join the run's output set (published together, report last)
        from limbseg_rt.runtime.qc.write import stage_qc_for_result

        def stage_qc(o):
            # the intensities were kept in memory (keep_image above): nothing is read again
            stage_qc_for_result(o, result, scan, o.paths["labels"], read_options=read_options)

    with out_set:
        if "seg" in out_set:  # staged before the report is written, so the report names it
            if result.labels_canonical.any():
                result.save_seg(out_set.temp("seg"), seg_type=seg_type, record_as=out_set.paths["seg"])
            else:
                out_set.drop("seg")
                result.report = result.report.with_warning(
                    "no muscle was found, so no DICOM SEG was written (a SEG needs a segment)"
                )
        written = result.write_outputs(out_set, before_commit=stage_qc, split_sides=split_sides)
    return result, written
