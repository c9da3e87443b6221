"""The Ray engine on a local Ray instance (2 CPUs, no dashboard, bound to 127.0.0.1): same per-scan
outputs as the local engine.

Needs ``ray[data]`` (the ``cluster`` extra, also in ``dev``); bounded by pytest-timeout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # local Ray on 127.0.0.1 only (read at import)

from cohort_helpers import hidden_entries, labels_of, write_cohort, write_corrupt

from limbseg_rt.runtime.cohort.batch import run_batch
from limbseg_rt.runtime.cohort.jobs import jobs_from_paths
from limbseg_rt.runtime.errors import EXIT_SCANS_FAILED, ModelError

ray = pytest.importorskip("ray", reason='the Ray engine needs pip install "limbseg-rt[cluster]"')
pytest.importorskip("ray.data")
pytestmark = [pytest.mark.timeout(300), pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_engine_writes_what_the_local_engine_writes(local_ray, tiny_unet_path, tmp_path):
    paths = write_cohort(tmp_path / "in", 3) + [write_corrupt(tmp_path / "in" / "bad.nii.gz")]
    jobs = jobs_from_paths(paths)
    kw = {"model": str(tiny_unet_path), "provider": "cpu", "threads": 1}
    ray_out, local_out = tmp_path / "ray", tmp_path / "local"
    seen = []
    res = run_batch(
        jobs, ray_out, segmenter_kwargs=kw, engine="ray", workers=2, progress=lambda d, t, o: seen.append(o["id"])
    )
    assert res.exit_code == EXIT_SCANS_FAILED and sorted(seen) == sorted(j.id for j in jobs)
    assert res.outcomes["bad"]["exit_code"] == 3 and "not a NIfTI image" in res.outcomes["bad"]["message"]
    run_batch(jobs, local_out, segmenter_kwargs=kw, engine="local", workers=1)

    for sid in ("s00", "s01", "s02"):
        assert (
            labels_of(ray_out / sid / f"{sid}_labels.nii.gz") == labels_of(local_out / sid / f"{sid}_labels.nii.gz")
        ).all()
        assert (ray_out / sid / f"{sid}_volumes.csv").read_text() == (
            local_out / sid / f"{sid}_volumes.csv"
        ).read_text()
    assert (ray_out / "cohort.csv").read_text() == (local_out / "cohort.csv").read_text()

    summary = json.loads((ray_out / "summary.json").read_text())
    assert summary["engine"]["engine"] == "ray" and summary["engine"]["workers"] == 2
    assert summary["engine"]["ready"][0]["provider"] == "cpu" and summary["versions"]["ray"] == ray.__version__
    assert summary["counts"]["segmented"] == 3 and summary["counts"]["failed"] == 1
    assert hidden_entries(ray_out) == []

    again = run_batch(jobs, ray_out, segmenter_kwargs=kw, engine="ray", workers=2)
    assert again.summary["counts"]["reused"] == 3  # the records written by Ray actors resume like local ones


def test_the_local_ray_listens_on_loopback_only(local_ray):
    assert {n["NodeManagerAddress"] for n in local_ray.nodes()} == {"127.0.0.1"}


def test_ray_actor_that_cannot_load_the_model_stops_the_batch(local_ray, tmp_path):
    paths = write_cohort(tmp_path / "in", 1)
    with pytest.raises(ModelError, match="model file not found"):
        run_batch(
            jobs_from_paths(paths),
            tmp_path / "o",
            engine="ray",
            workers=1,
            segmenter_kwargs={"model": str(Path(tmp_path) / "none.onnx"), "provider": "cpu"},
        )


def test_ray_engine_runs_the_analysis_like_the_local_engine(local_ray, tiny_unet_path, tmp_path):
    """Issue 22: the analysis options and a scan's Dixon paths reach the Ray actors (jobs cross as JSON)."""
    pytest.importorskip("scipy")
    import nibabel as nib

    from limbseg_rt.runtime.cohort.jobs import ScanJob
    from limbseg_rt.runtime.phantom.dixon import make_dixon_phantom

    imgs = make_dixon_phantom(7, slices=8, shape=(64, 56), spacing=(6.0, 6.0, 24.0))
    for k in ("image", "fat", "water"):
        nib.save(imgs[k], tmp_path / f"{k}.nii.gz")
    jobs = [
        ScanJob(
            "d",
            str(tmp_path / "image.nii.gz"),
            dixon_fat=str(tmp_path / "fat.nii.gz"),
            dixon_water=str(tmp_path / "water.nii.gz"),
        )
    ]
    kw = {"model": str(tiny_unet_path), "provider": "cpu", "threads": 1}
    analysis = {"clean": True, "ff_erode": 1}
    run_batch(jobs, tmp_path / "ray", segmenter_kwargs=kw, engine="ray", workers=1, analysis=analysis)
    run_batch(jobs, tmp_path / "local", segmenter_kwargs=kw, engine="local", workers=1, analysis=analysis)
    text = (tmp_path / "ray" / "cohort.csv").read_text()
    assert text == (tmp_path / "local" / "cohort.csv").read_text()
    header = text.splitlines()[0].split(",")
    assert "side" in header and "ff_mean" in header and "asymmetry_volume_percent" in header
