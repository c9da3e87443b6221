"""Helpers for the DICOM node tests: a small MR series, a threshold "model", dcmtk peers, waiting.

Everything stays on 127.0.0.1; every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PATIENT_NAME = "Doe^Jane"  # must never appear in a log line
MR = "1.2.840.10008.5.1.4.1.1.4"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"

needs_dcmtk = None
if shutil.which("storescu") is None or shutil.which("storescp") is None:  # pragma: no cover
    import pytest

    needs_dcmtk = pytest.mark.skip(reason="dcmtk (storescu/storescp) is not installed: bash .ci/setup-debian.sh")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_series(
    folder: Path,
    *,
    slices: int = 3,
    size: int = 16,
    seed: int = 0,
    series_uid: str | None = None,
    study_uid: str | None = None,
) -> tuple[str, list[Path]]:
    """Write an axial MR series (uint16 ``size x size`` x ``slices``, 1 mm pixels, 4 mm slices); returns (uid, files)."""
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    files = []
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2
    for k in range(slices):
        pix = (disc * 800 + rng.integers(0, 50, (size, size))).astype(np.uint16)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MR
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        sop = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SOPClassUID, ds.SOPInstanceUID = MR, sop
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = PATIENT_NAME, "PID-42", "19600101", "F"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "A1"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 7, k + 1
        ds.Manufacturer = "limbseg-rt tests"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength = 10, 500, 1
        ds.ImagePositionPatient = [-size / 2, -size / 2, 4.0 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness, ds.SpacingBetweenSlices = [1, 1], 4, 4
        ds.PositionReferenceIndicator = ""
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pix.tobytes()
        path = folder / f"im{k:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return series_uid, files


def threshold_seg(series_dir: Path, out_dir: Path) -> list[Path]:
    """A stand-in model: a BINARY DICOM SEG (highdicom) of pixels above 400 in the spooled series."""
    import highdicom as hd
    from pydicom import dcmread
    from pydicom.sr.codedict import codes

    sources = sorted(
        (dcmread(p) for p in Path(series_dir).glob("*.dcm")), key=lambda d: float(d.ImagePositionPatient[2])
    )
    mask = np.stack([d.pixel_array > 400 for d in sources]).astype(bool)
    desc = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="bright",
        segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Muscle,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="threshold", version="1", family=codes.DCM.ArtificialIntelligence
        ),
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc],
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="limbseg-rt tests",
        manufacturer_model_name="threshold",
        software_versions="1",
        device_serial_number="0",
    )
    out = Path(out_dir) / "seg.dcm"
    seg.save_as(out)
    return [out]


IDENTITY = {"model_sha256": "0" * 64, "settings": {"threshold": 400}}


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def storescu(port: int, files, *, calling: str = "SCANNER", called: str = "LIMBSEG", extra=(), timeout: float = 30):
    """Run dcmtk storescu against 127.0.0.1:port; returns the CompletedProcess (verbose output in stdout+stderr)."""
    cmd = ["storescu", "-v", "-aet", calling, "-aec", called, *extra, "127.0.0.1", str(port), *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def storescp(folder: Path, port: int, ae: str = "PACS", extra=()):
    """dcmtk storescp as the PACS on 127.0.0.1:port, writing what it receives into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        ["storescp", "-aet", ae, "-od", str(folder), "-fe", ".dcm", "--fork", *extra, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _port_open(port), 10, f"storescp on port {port}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def committed(spool: Path, name: str = "seg.dcm") -> list[Path]:
    """``name`` in every committed result folder (not the hidden staging folders a worker fills)."""
    results = spool / "results"
    return [p / name for p in sorted(results.iterdir()) if not p.name.startswith(".") and (p / name).exists()]


def received(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.dcm")) if folder.exists() else []


def node_config(tmp: Path, port: int, *, pacs_port: int | None = None, **overrides):
    from limbseg_rt.runtime.service.config import Destination, ServeConfig

    kw = dict(
        ae_title="LIMBSEG",
        port=port,
        bind="127.0.0.1",
        allowed_calling_ae=("SCANNER", "SCANNER2"),
        spool=tmp / "spool",
        stable_seconds=1.0,
        backoff_seconds=0.5,
        backoff_max_seconds=1.0,
        shutdown_grace_seconds=20.0,
    )
    if pacs_port is not None:
        kw["destinations"] = (Destination("pacs", "127.0.0.1", pacs_port, "PACS"),)
    kw.update(overrides)
    return ServeConfig(**kw)


def write_toml(path: Path, config) -> Path:
    """The TOML a user would write for ``config`` (what the subprocess runner and the CLI read)."""
    lines = [
        "[node]",
        f'ae_title = "{config.ae_title}"',
        f"port = {config.port}",
        f'bind = "{config.bind}"',
        "allowed_calling_ae = " + json.dumps(list(config.allowed_calling_ae)),
        "[spool]",
        f'folder = "{config.spool}"',
        f"quota_mb = {config.quota_mb}",
        f"stable_seconds = {config.stable_seconds}",
        "[delivery]",
        f"backoff_seconds = {config.backoff_seconds}",
        f"backoff_max_seconds = {config.backoff_max_seconds}",
        "[status]",
        f"shutdown_grace_seconds = {config.shutdown_grace_seconds}",
    ]
    if config.tls is not None:
        lines += ["[tls]", f'cert = "{config.tls.cert}"', f'key = "{config.tls.key}"'] + (
            [f'ca = "{config.tls.ca}"'] if config.tls.ca else []
        )
    for d in config.destinations:
        lines += [
            "[[destination]]",
            f'name = "{d.name}"',
            f'host = "{d.host}"',
            f"port = {d.port}",
            f'ae_title = "{d.ae_title}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


RUNNER = """
import os, sys, signal, threading, logging, time
sys.path.insert(0, {tests!r})
from serve_helpers import threshold_seg, IDENTITY
delay = float(os.environ.get("SERVE_TEST_DELAY", "0"))  # a slow model, for shutdown tests
def process(series_dir, out_dir):
    time.sleep(delay)
    return threshold_seg(series_dir, out_dir)
from limbseg_rt.runtime.service.config import load_config
from limbseg_rt.runtime.service.logs import configure
from limbseg_rt.runtime.service.node import Node
configure(sys.stderr, logging.DEBUG)
node = Node(load_config(sys.argv[1]), process, IDENTITY)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
node.start()
print("READY", flush=True)
while not stop.wait(0.2):
    pass
node.stop()
"""


def start_node_process(toml: Path, log_path: Path, *, delay: float = 0.0) -> subprocess.Popen:
    """The node (threshold model) in its own process, so a test can SIGKILL it; waits until it listens."""
    code = RUNNER.format(tests=str(Path(__file__).parent))
    log = open(log_path, "ab")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(toml)],
        stdout=subprocess.PIPE,
        stderr=log,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "SERVE_TEST_DELAY": str(delay)},
    )
    line = proc.stdout.readline()
    if b"READY" not in line:
        proc.kill()
        raise AssertionError(f"node process did not start: {Path(log_path).read_text()[-2000:]}")
    return proc
