"""The report and manifest as frozen dataclasses, and the JSON schema that documents them."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from limbseg_rt.runtime.analysis.measures import CSV_COLUMNS, MuscleSide
from limbseg_rt.runtime.model.labels import default_label_table
from limbseg_rt.runtime.report.run_report import REPORT_SCHEMA, Manifest, Report, muscle_stats, schema_path

TABLE = default_label_table()


def _report() -> Report:
    lab = np.zeros((6, 5, 4), np.uint8)
    lab[1:3, 1:3, 1:3] = 2
    return Report(
        muscle_stats(lab, np.ones(lab.shape), TABLE, 1.0), {"model": {"sha256": "abc"}, "qc": {"n": 1}}, ["fov_cut"], []
    )


def test_report_and_manifest_are_frozen_and_read_like_dicts():
    r = _report()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.flags = ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.manifest.outputs = {}
    assert isinstance(r.manifest, Manifest) and r.manifest["model"]["sha256"] == "abc"
    assert r["manifest"]["qc"] == {"n": 1} and r.manifest.get("missing", 5) == 5  # later stages' keys survive
    saved = r.manifest.saved({"labels": "x.nii.gz"}, 0.5, 100.0)
    assert saved.outputs == {"labels": "x.nii.gz"} and saved.timings_s["write"] == 0.5
    assert r.manifest.outputs is None and "write" not in r.manifest.timings_s  # the original is unchanged
    assert r.to_dict()["schema"] == REPORT_SCHEMA and "analysis" not in r.to_dict()


def test_the_schema_documents_every_field_of_the_records():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(schema_path().read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    defs = schema["$defs"]
    side_props = defs["muscle_side"]["properties"]
    assert set(side_props) == {f.name for f in dataclasses.fields(MuscleSide)}
    for name, prop in {**side_props, **defs["muscle"]["properties"]}.items():
        assert prop.get("description"), name
    stats_fields = {
        f.name
        for f in dataclasses.fields(muscle_stats(np.zeros((2, 2, 2), np.uint8), np.zeros((2, 2, 2)), TABLE, 1.0)[0])
    }
    assert set(defs["muscle"]["properties"]) == stats_fields
    # Every CSV column is a record field (or one coordinate of the centroid).
    assert set(CSV_COLUMNS) - set(side_props) == {"centroid_x_mm", "centroid_y_mm", "centroid_z_mm"}


def test_the_schema_rejects_what_it_should(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(schema_path().read_text())
    good = json.loads(_report().to_json())
    good["manifest"] = {
        k: good["manifest"].get(k, {})
        for k in ("model", "engine", "pipeline", "timings_s", "versions", "input", "report_units")
    }
    good["manifest"]["peak_rss_mib"] = 1.0
    jsonschema.validate(good, schema)
    bad = json.loads(json.dumps(good))
    bad["muscles"][0]["volume_ml"] = -1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    bad = json.loads(json.dumps(good))
    bad["manifest"]["undocumented"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_the_schema_is_installed_with_the_package():
    assert schema_path().is_file()
    from pathlib import Path

    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())
    assert "report/*.json" in pyproject["tool"]["setuptools"]["package-data"]["limbseg_rt.runtime"]
