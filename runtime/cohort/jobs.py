"""What a cohort is made of: one ``ScanJob`` per scan, from input paths or a CSV manifest.

A job names its scan (``id``, also the name of its output folder ``DIR/<id>/``), where the scan is
(``source``: a NIfTI file, or a folder such as a DICOM series, handed to ``Segmenter.segment`` as
it is) and the per-scan settings a manifest may give (``limb_range``). Nothing here reads images:
a bad scan is found by the worker that segments it and becomes that scan's failed row.

Manifest (CSV, UTF-8, header row): ``id`` and ``path`` are required; ``limb_range`` (``A:B``, the
part of the limb the scan covers, 0 = hip, 1 = ankle; empty = none) is optional. A relative path is
relative to the manifest's folder. Unknown columns are refused (a misspelt column would otherwise
be ignored silently), as are duplicate or unusable ids.

Dixon columns (issue 22, for ``batch --analysis``): ``dixon_fat`` and ``dixon_water`` (both or
neither) or ``fat_fraction``, NIfTI files on the scan's grid, relative to the manifest's folder
like ``path``; empty = none for that scan. Giving both kinds on one line is refused here; a file
that is missing or on another grid fails that scan (exit 3) when it is segmented.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from limbseg_rt.runtime.errors import EXIT_USAGE, LimbsegError
from limbseg_rt.runtime.hashing import sha256_file

DIXON_COLUMNS = ("dixon_fat", "dixon_water", "fat_fraction")
MANIFEST_COLUMNS = ("id", "path", "limb_range", *DIXON_COLUMNS)
REQUIRED_COLUMNS = ("id", "path")
# Ids become folder names on every file system a cohort may live on (NFS, SMB, object-store mounts).
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
NIFTI_SUFFIXES = (".nii.gz", ".nii")


class ManifestError(LimbsegError):
    """The cohort's list of scans cannot be used (bad manifest, duplicate or unusable ids)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class ScanJob:
    """One scan of the cohort. ``limb_range``: ``(a, b)`` with ``0 <= a < b <= 1`` or None;
    ``dixon_fat``/``dixon_water``/``fat_fraction``: absolute paths of this scan's Dixon images or None."""

    id: str
    source: str
    limb_range: tuple[float, float] | None = None
    dixon_fat: str | None = None
    dixon_water: str | None = None
    fat_fraction: str | None = None

    @property
    def dixon(self) -> dict[str, str]:
        """The Dixon paths this scan has, by column name (empty when none)."""
        return {c: getattr(self, c) for c in DIXON_COLUMNS if getattr(self, c)}

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "source": self.source,
            "limb_range": list(self.limb_range) if self.limb_range else None,
            **self.dixon,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ScanJob:
        lr = d.get("limb_range")
        limb_range = (float(lr[0]), float(lr[1])) if lr is not None and len(lr) == 2 else None
        return cls(str(d["id"]), str(d["source"]), limb_range, **{c: str(d[c]) for c in DIXON_COLUMNS if d.get(c)})


def scan_id_for(path: str | os.PathLike) -> str:
    """``/data/s01.nii.gz`` -> ``s01``; a folder ``/data/s02/`` -> ``s02``; other characters -> ``_``."""
    from limbseg_rt.runtime.io.outputs import nifti_stem

    p = Path(path)
    name = nifti_stem(p.name, NIFTI_SUFFIXES)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-")
    return safe[:128] or "scan"


def check_id(scan_id: str, where: str) -> str:
    if not _ID_RE.match(scan_id):
        raise ManifestError(
            f"{where}: scan id {scan_id!r} cannot name a folder; use letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, at most 128 characters)"
        )
    return scan_id


def jobs_from_paths(paths: list[str | os.PathLike]) -> list[ScanJob]:
    """One job per input path; the id is the file name without ``.nii``/``.nii.gz`` (or the folder name).

    Two inputs with the same id (``a/s01.nii.gz`` and ``b/s01.nii.gz``) are refused: give a manifest.
    """
    jobs: list[ScanJob] = []
    seen: dict[str, object] = {}
    for raw in paths:
        sid = scan_id_for(raw)
        if sid in seen:
            raise ManifestError(
                f"inputs {seen[sid]} and {raw} would both be scan {sid!r}; give a manifest (--manifest) with distinct ids"
            )
        seen[sid] = raw
        jobs.append(ScanJob(sid, os.path.abspath(os.path.expanduser(str(raw)))))  # workers may run elsewhere
    if not jobs:
        raise ManifestError("no scans given; name NIfTI files or folders, or give --manifest cohort.csv")
    return jobs


def parse_limb_range(text: str, where: str) -> tuple[float, float] | None:
    text = text.strip()
    if not text:
        return None
    try:
        a, b = (float(v) for v in text.split(":"))
    except ValueError:
        raise ManifestError(f"{where}: limb_range {text!r} is not A:B such as 0:0.5") from None
    if not 0.0 <= a < b <= 1.0:
        raise ManifestError(f"{where}: limb_range {text!r} needs 0 <= A < B <= 1 (0 = hip, 1 = ankle)")
    return a, b


def load_manifest(path: str | os.PathLike) -> list[ScanJob]:
    """Jobs from a cohort CSV (see module docstring). Raises ``ManifestError`` naming the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheets often write a BOM
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {path} cannot be read ({exc}); save it as UTF-8 CSV") from None
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise ManifestError(
            f"manifest {path}: missing column(s) {', '.join(missing)}; the header needs id,path[,limb_range,dixon_fat,dixon_water,fat_fraction]"
        )
    unknown = [c for c in columns if c not in MANIFEST_COLUMNS]
    if unknown:
        raise ManifestError(
            f"manifest {path}: unknown column(s) {', '.join(unknown)}; known: {', '.join(MANIFEST_COLUMNS)}"
        )
    jobs: list[ScanJob] = []
    seen: dict[str, int] = {}
    for lineno, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if not any(row.values()):
            continue  # blank line
        where = f"{path.name} line {lineno}"
        sid = check_id(row.get("id", ""), where)
        if sid in seen:
            raise ManifestError(f"{where}: scan id {sid!r} already used on line {seen[sid]}; ids must be unique")
        seen[sid] = lineno
        if not row.get("path"):
            raise ManifestError(f"{where}: scan {sid!r} has no path")
        jobs.append(
            ScanJob(
                sid,
                _manifest_path(path, row["path"]),
                parse_limb_range(row.get("limb_range", ""), where),
                **_dixon_columns(path, row, where),
            )
        )
    if not jobs:
        raise ManifestError(f"manifest {path} lists no scans")
    return jobs


def _manifest_path(manifest: Path, text: str) -> str:
    p = Path(text).expanduser()
    return os.path.abspath(p if p.is_absolute() else manifest.parent / p)


def _dixon_columns(manifest: Path, row: dict, where: str) -> dict[str, str]:
    """The Dixon paths of one manifest line (absolute); ``ManifestError`` for an incomplete or mixed set."""
    given = {c: _manifest_path(manifest, row[c]) for c in DIXON_COLUMNS if row.get(c)}
    if ("dixon_fat" in given) != ("dixon_water" in given):
        raise ManifestError(f"{where}: give both dixon_fat and dixon_water (or fat_fraction alone)")
    if "fat_fraction" in given and "dixon_fat" in given:
        raise ManifestError(f"{where}: give fat_fraction or dixon_fat/dixon_water, not both")
    return given


def input_kind(source: str | os.PathLike) -> str:
    """``"nifti"`` (a ``.nii``/``.nii.gz`` file), ``"folder"`` (e.g. a DICOM series), ``"file"``
    (any other file, left to the reader to accept or refuse) or ``"missing"``."""
    p = Path(source)
    if p.is_dir():
        return "folder"
    if p.is_file():
        return "nifti" if p.name.lower().endswith(NIFTI_SUFFIXES) else "file"
    return "missing"


def input_sha256(source: str | os.PathLike) -> str:
    """SHA-256 identifying the input's content: of the file's bytes, or for a folder of its files.

    A folder's hash covers every regular file below it, in sorted relative-path order, as
    ``relpath NUL sha256 NUL``: renaming, adding, removing or changing any file changes it.
    Hidden files (``.name``) are left out: file managers and PACS tools drop them freely.
    """
    p = Path(source)
    if not p.is_dir():
        return sha256_file(p)
    h = hashlib.sha256()
    files = sorted(
        f for f in p.rglob("*") if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)
    )
    for f in files:
        h.update(f.relative_to(p).as_posix().encode("utf-8") + b"\0")
        h.update(sha256_file(f).encode("ascii") + b"\0")
    return h.hexdigest()
