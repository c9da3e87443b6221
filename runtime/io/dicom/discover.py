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
    # Uncompressed little-endian files are parsed without their pixel data (PixelData is not in
    # ``ds``): ``pixels`` = (byte offset of the PixelData value in the file ``ref``, its length).
    pixels: tuple[int, int] | None = None


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
        if isinstance(data_or_path, str):
            found = _parse_headers(data_or_path, pydicom)
            if found is not None:
                return found
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


_NATIVE_LITTLE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}  # implicit / explicit VR little endian
_PIXEL_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) little endian


def _parse_headers(path: str, pydicom):
    """(dataset without PixelData, (offset, length)) for an uncompressed little-endian file whose
    PixelData has a defined length; None otherwise (the caller parses the whole file).

    The bare parse of the pixel bytes costs twice the header parse; the reader later reads them
    from the offset straight into its volume."""
    with open(path, "rb") as fh:
        ds = pydicom.dcmread(fh, stop_before_pixels=True)
        meta = getattr(ds, "file_meta", None)
        ts = str(getattr(meta, "TransferSyntaxUID", "") or "") if meta is not None else ""
        if ts not in _NATIVE_LITTLE:
            return None
        start = fh.tell()
        head = fh.read(12)
        end = fh.seek(0, os.SEEK_END)
    if len(head) < 8 or head[:4] != _PIXEL_TAG:
        return None
    if ts == "1.2.840.10008.1.2":
        length, offset = int.from_bytes(head[4:8], "little"), start + 8
    else:
        if len(head) < 12 or head[4:6] not in (b"OB", b"OW"):
            return None
        length, offset = int.from_bytes(head[8:12], "little"), start + 12
    if length == 0xFFFFFFFF:  # undefined length: encapsulated, not native
        return None
    return ds, (offset, min(length, max(0, end - offset)))


def _source(data_or_path):
    # Deferred values are re-read from the file later, so deferring needs a path (not zip bytes).
    if isinstance(data_or_path, str):
        return data_or_path, None
    return io.BytesIO(data_or_path), None


def _damaged(ref: str):
    raise InputError(
        f"{ref}: is a DICOM file but cannot be parsed (damaged or truncated); copy it again from the scanner or PACS"
    )


def discover(path) -> Discovery:
    """Parse every DICOM instance under ``path`` (folder, ``.zip`` or file). Raises InputError."""
    pydicom = require_pydicom()
    src = str(path)
    p = Path(path)
    if not p.exists():
        raise InputError(f"{src}: not found; give a DICOM folder, a .zip of one, or a DICOM file")
    found = Discovery(src, [])
    if p.is_dir():
        entries: list = []
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
    meta = getattr(ds[0] if isinstance(ds, tuple) else ds, "file_meta", None)
    media = meta.get_item(0x00020002) if meta is not None else None
    media = (
        media.value.decode("ascii", "replace").strip(" \x00")
        if media is not None and isinstance(media.value, bytes)
        else str(getattr(media, "value", "") or "")
    )
    if media == MEDIA_DIRECTORY_SOP or "DirectoryRecordSequence" in (ds[0] if isinstance(ds, tuple) else ds):
        found.skipped_dicomdir += 1
        return
    pixels = None
    if isinstance(ds, tuple):
        ds, pixels = ds
    found.instances.append(Instance(ref, ds, pixels))
