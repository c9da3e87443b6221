"""Find DICOM instances in a folder (recursive), a ``.zip`` file or a single file, and group them.

Every regular file is looked at, whatever its name: a file is DICOM when it has the ``DICM``
preamble (or, without one, parses as a dataset holding a SOP Class UID and a Series Instance UID).
Anything else is skipped and counted. ``DICOMDIR`` files (Media Storage Directory) are skipped too:
the recursive walk finds the images they index. Headers are parsed once with large values deferred,
so the pixel data of the chosen series is read later, only when it is needed.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from limbseg_rt.runtime.errors import InputError, MissingDependencyError

INSTALL_HINT = 'DICOM needs the dicom extra: pip install "limbseg-rt[dicom]"'
MEDIA_DIRECTORY_SOP = "1.2.840.10008.1.3.10"


def require_pydicom():
    """Import pydicom or raise MissingDependencyError with the install hint (exit 12)."""
    try:
        import pydicom
    except ImportError:
        raise MissingDependencyError(INSTALL_HINT) from None
    return pydicom


def looks_like_dicom(path) -> bool:
    """True for a folder, a ``.zip`` file or a file with the ``DICM`` preamble (cheap: 132 bytes)."""
    p = Path(path)
    if p.is_dir():
        return True
    if not p.is_file():
        return False
    if p.name.lower().endswith(".zip"):
        return True
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


@dataclass
class Instance:
    """One parsed DICOM file. ``ref``: where it came from (a path, or ``archive.zip!member``)."""

    ref: str
    ds: object = field(repr=False)


@dataclass
class Discovery:
    """All DICOM instances found under one input, plus what was skipped."""

    source: str
    instances: list[Instance]
    skipped_non_dicom: int = 0
    skipped_dicomdir: int = 0


def _parse(data_or_path, ref: str, pydicom):
    """A dataset, or None when the bytes are not DICOM."""
    from pydicom.errors import InvalidDicomError

    try:
        fp, defer = _source(data_or_path)
        return pydicom.dcmread(fp, defer_size=defer)
    except InvalidDicomError:
        pass
    except Exception:
        return _damaged(ref)
    try:  # no preamble: old files; accept only when the core identifiers parse
        fp, defer = _source(data_or_path)
        log = logging.getLogger("pydicom")
        level = log.level
        log.setLevel(logging.ERROR)  # forced parsing of a non-DICOM file warns about VRs: not news
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(fp, force=True, defer_size=defer)
        finally:
            log.setLevel(level)
        if "SOPClassUID" in ds and "SeriesInstanceUID" in ds:
            return ds
    except Exception:
        pass
    return None


def _source(data_or_path):
    # Deferred values are re-read from the file later, so deferring needs a path (not zip bytes).
    if isinstance(data_or_path, str):
        return data_or_path, "64 KB"
    return io.BytesIO(data_or_path), None


def _damaged(ref: str):
    raise InputError(f"{ref}: is a DICOM file but cannot be parsed (damaged or truncated); copy it again from the scanner or PACS")


def discover(path) -> Discovery:
    """Parse every DICOM instance under ``path`` (folder, ``.zip`` or file). Raises InputError."""
    pydicom = require_pydicom()
    src = str(path)
    p = Path(path)
    if not p.exists():
        raise InputError(f"{src}: not found; give a DICOM folder, a .zip of one, or a DICOM file")
    found = Discovery(src, [])
    if p.is_dir():
        entries = []
        for root, dirs, files in os.walk(p):
            dirs.sort()
            entries.extend(os.path.join(root, f) for f in sorted(files))
        for f in entries:
            if not os.path.isfile(f):
                continue
            _add(found, _parse(f, f, pydicom), f)
    elif p.name.lower().endswith(".zip"):
        try:
            with zipfile.ZipFile(p) as zf:
                for info in sorted(zf.infolist(), key=lambda i: i.filename):
                    if info.is_dir():
                        continue
                    ref = f"{src}!{info.filename}"
                    _add(found, _parse(zf.read(info), ref, pydicom), ref)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
            raise InputError(f"{src}: is not a readable .zip archive ({exc}); copy it again") from None
    else:
        _add(found, _parse(src, src, pydicom), src)
    if not found.instances:
        extra = f" ({found.skipped_non_dicom} non-DICOM file(s) skipped)" if found.skipped_non_dicom else ""
        raise InputError(f"{src}: holds no DICOM images{extra}; give the folder of an MR series")
    return found


def _add(found: Discovery, ds, ref: str) -> None:
    if ds is None:
        found.skipped_non_dicom += 1
        return
    sop = str(getattr(ds, "SOPClassUID", "") or ds.get("file_meta", {}).get("MediaStorageSOPClassUID", ""))
    meta = getattr(ds, "file_meta", None)
    if sop == MEDIA_DIRECTORY_SOP or (meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == MEDIA_DIRECTORY_SOP):
        found.skipped_dicomdir += 1
        return
    found.instances.append(Instance(ref, ds))
