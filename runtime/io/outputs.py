"""The one owner of output files: check every output path once, write all to temporaries, publish together.

An ``OutputSet`` is the set of files one command run writes (labels, side files, CSV, report; an
evaluation's JSON/CSV; an exported model; a cohort table). Its rules (docs/outputs.md):

- **Checked once, before any work** (``OutputSet.add`` + ``check``): a target is never one of the
  run's inputs (compared with ``os.path.samefile`` and by real path, so hard links and symlinks are
  caught), never a folder, never another target of the set; its folder must exist and be writable
  (a probe file is created and removed there, which catches read-only file systems and missing
  permissions); its name must fit the file system's ``NAME_MAX``.
- **Written to temporaries beside the targets**: ``.limbseg-<pid>-<8 hex>.tmp`` plus the target's
  format suffix (``.nii.gz``, ``.nii``; nibabel picks the format from it). The name length does not
  depend on the target's, so a legal target name never makes an illegal temporary name. Files are
  created ``O_EXCL`` with mode 0666 minus the umask (what a plain ``open`` gives, not mkstemp's 0600).
- **Published together** (``commit``): only when every file of the set is complete, the
  temporaries are renamed over the targets in the order they were added (the report, marked
  ``last``, after all others),
  with SIGINT/SIGTERM/SIGHUP held for those few renames. Until then the previous run's files are
  untouched, so a rerun that fails (disk full, ``ulimit -f``, a signal, an error) leaves the
  previous set complete; its temporaries are removed (``discard``, also on ``KeyboardInterrupt``).
- **Non-regular targets**: a character device (``/dev/null``) or a FIFO with a reader is written in
  place at publish time (never renamed over: the device node stays); a FIFO without a reader, a block
  device or a socket is refused.
- **Stale temporaries**: ``check`` removes temporaries of this naming in the target folders whose
  pid is not a running process (a run killed by SIGKILL or a power cut).

Only the standard library here. OS errors become ``OutputError`` with one line naming the cause
(disk full, file too large, read-only file system, permission, name too long).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import signal
import stat
import tempfile
import threading
from pathlib import Path

from limbseg_rt.runtime.errors import OutputError

TEMP_PREFIX = ".limbseg-"
_TEMP_RE = re.compile(r"^\.limbseg-(?P<pid>\d+)-[0-9a-f]{8}\.tmp(\.nii\.gz|\.nii)?$")
_FORMAT_SUFFIXES = (".nii.gz", ".nii")
_HELD_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)


def umask_mode() -> int:
    """0666 minus the process umask: the mode ``open(path, "w")`` gives a new file."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def os_error_line(exc: OSError, path, what: str = "output") -> str:
    """One line saying why ``path`` could not be written, and what to do."""
    p = quote(path)
    folder = quote(Path(path).parent if str(Path(path).parent) else Path("."))
    code = exc.errno
    if code == errno.ENOSPC:
        return f"the {what} {p} cannot be written: no space left on the device of {folder}; free space or choose another folder"
    if code == getattr(errno, "EDQUOT", -1):
        return f"the {what} {p} cannot be written: disk quota exceeded in {folder}; free space or choose another folder"
    if code == errno.EFBIG:
        return (
            f"the {what} {p} cannot be written: file too large for this file system or the shell's "
            "file size limit (ulimit -f); raise the limit or choose another folder"
        )
    if code == errno.EROFS:
        return f"the {what} {p} cannot be written: {folder} is on a read-only file system; choose another output folder"
    if code in (errno.EACCES, errno.EPERM):
        return f"the {what} {p} cannot be written: permission denied in {folder}; choose a folder you can write to"
    if code == errno.ENAMETOOLONG:
        return f"the {what} {p} cannot be written: the name is too long for this file system; choose a shorter name"
    if code == errno.ENOENT:
        return f"the {what} {p} cannot be written: its output folder does not exist ({folder}); create it or choose another path"
    return f"the {what} {p} cannot be written ({exc.strerror or exc}); check the disk and the folder's permissions"


def quote(path) -> str:
    """A path for a one-line message: quoted, with control characters (newlines) escaped."""
    text = str(path)
    return "'" + text.encode("unicode_escape").decode("ascii", "replace").replace("'", "\\'") + "'"


def temp_suffix(name: str) -> str:
    lower = name.lower()
    return next((s for s in _FORMAT_SUFFIXES if lower.endswith(s)), "")


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Remove ``.limbseg-<pid>-....tmp*`` files in ``folder`` whose pid is not running; the paths removed."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if not m or int(m["pid"]) == os.getpid() or _pid_alive(int(m["pid"])):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    except OSError:
        return True
    return True


class _Target:
    __slots__ = ("key", "path", "what", "in_place", "temp", "fd", "last")

    def __init__(self, key: str, path: Path, what: str, in_place: bool, fd: int | None = None, last: bool = False):
        self.key, self.path, self.what, self.in_place, self.fd, self.last = key, path, what, in_place, fd, last
        self.temp: Path | None = None


class OutputSet:
    """The outputs of one run. Use as a context manager; ``commit()`` publishes, leaving discards.

    with OutputSet(inputs=[scan]) as out:
        out.add("labels", "a_labels.nii.gz", what="label file")
        out.add("report", "a_report.json", what="report")     # added last: published last
        out.check()                                             # before the work starts
        ...
        nib.save(img, out.temp("labels"))                       # or out.write_text(key, text)
        out.write_text("report", text)
        written = out.commit()                                  # {key: target path}
    """

    def __init__(self, inputs=()):
        self._inputs = [Path(p) for p in inputs if p is not None]
        self._targets: dict[str, _Target] = {}
        self._committed = False
        self._stage_dir: Path | None = None

    # ------------------------------------------------------------------ declaring
    def add(self, key: str, path, *, what: str = "output", last: bool = False) -> Path:
        """Declare target ``path`` (checked now; ``OutputError`` if unusable). Returns the target path.

        Targets are published in declaration order, those with ``last=True`` (the report) after all others.
        """
        if key in self._targets:
            raise ValueError(f"output {key!r} declared twice")
        raw = Path(path).expanduser()
        _check_name_length(raw, what)
        target = Path(os.path.realpath(raw)) if raw.is_symlink() else raw
        for other in self._targets.values():
            if _same(other.path, target) and not (other.in_place and _is_char_device(target)):
                raise OutputError(
                    f"the {what} {quote(raw)} and the {other.what} {quote(other.path)} are the same file; "
                    "give each output its own name"
                )
        in_place, fd = self._check_target(raw, target, what)
        self._targets[key] = _Target(key, target, what, in_place, fd, last)
        return target

    def _check_target(self, raw: Path, target: Path, what: str) -> tuple[bool, int | None]:
        """(written in place?, open write end of a FIFO); OutputError if unusable."""
        for src in self._inputs:
            if _same(src, target):
                raise OutputError(
                    f"the {what} {quote(raw)} would overwrite the input {quote(src)}; choose another "
                    "output name (inputs are never overwritten)"
                )
        try:
            st = os.stat(target)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise OutputError(os_error_line(exc, raw, what)) from None
        if st is not None:
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                raise OutputError(f"the {what} {quote(raw)} is a folder; give a file name")
            if stat.S_ISCHR(mode):
                return True, None
            if stat.S_ISFIFO(mode):
                # Held open until the publish: closing it now would give the reader an early end of file.
                return True, self._open_fifo(raw, target, what)
            if not stat.S_ISREG(mode):
                raise OutputError(
                    f"the {what} {quote(raw)} is not a regular file (a block device or socket); choose a file name"
                )
        folder = target.parent if str(target.parent) else Path(".")
        if not folder.is_dir():
            raise OutputError(
                f"the {what} {quote(raw)} cannot be written: its output folder does not exist ({quote(folder)}); "
                "create it or choose another path"
            )
        _check_name_length(target, what)
        return False, None

    @staticmethod
    def _open_fifo(raw: Path, target: Path, what: str) -> int:
        try:
            fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                raise OutputError(
                    f"the {what} {quote(raw)} is a named pipe with no reader; start the reader first "
                    "or give a file name"
                ) from None
            raise OutputError(os_error_line(exc, raw, what)) from None
        os.set_blocking(fd, True)
        return fd

    def check(self) -> None:
        """Probe every target folder for writability (and clear stale temporaries there)."""
        seen = set()
        for t in self._targets.values():
            if t.in_place:
                continue
            folder = t.path.parent if str(t.path.parent) else Path(".")
            key = os.path.realpath(folder)
            if key in seen:
                continue
            seen.add(key)
            remove_stale_temporaries(folder)
            probe = folder / self._temp_name("")
            try:
                fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                os.close(fd)
                os.unlink(probe)
            except OSError as exc:
                raise OutputError(os_error_line(exc, t.path, t.what)) from None

    def drop(self, key: str) -> None:
        """Withdraw declared output ``key`` (e.g. a DICOM SEG when no muscle was found): its temporary,
        if any, is removed and nothing is published for it."""
        t = self._targets.pop(key)
        if t.temp is not None:
            Path(t.temp).unlink(missing_ok=True)
        if t.fd is not None:
            os.close(t.fd)

    # ------------------------------------------------------------------ writing
    @property
    def paths(self) -> dict[str, Path]:
        return {k: t.path for k, t in self._targets.items()}

    def __contains__(self, key: str) -> bool:
        return key in self._targets

    def temp(self, key: str) -> Path:
        """The (created, empty) temporary file to write output ``key`` into; same format suffix as the target."""
        t = self._targets[key]
        if t.temp is None:
            if t.in_place:
                if self._stage_dir is None:
                    self._stage_dir = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))
                folder = self._stage_dir
            else:
                folder = t.path.parent if str(t.path.parent) else Path(".")
            tmp = folder / self._temp_name(temp_suffix(t.path.name))
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                os.close(fd)
            except OSError as exc:
                raise OutputError(os_error_line(exc, t.path, t.what)) from None
            t.temp = tmp
        return t.temp

    def write_text(self, key: str, text: str) -> Path:
        """Write ``text`` (UTF-8, newlines as given) to output ``key``'s temporary; returns the target."""
        return self.write_bytes(key, text.encode("utf-8"))

    def write_bytes(self, key: str, data: bytes) -> Path:
        tmp = self.temp(key)
        t = self._targets[key]
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            raise OutputError(os_error_line(exc, t.path, t.what)) from None
        return t.path

    def writing(self, key: str):
        """A context in which OS errors writing output ``key`` (e.g. by nibabel or onnx) become ``OutputError``."""
        return _Writing(self._targets[key])

    # ------------------------------------------------------------------ publishing
    def commit(self) -> dict[str, Path]:
        """Publish every written temporary over its target, in declaration order; ``{key: target}``.

        Targets that were declared but never written are skipped (and not returned).
        """
        main = threading.current_thread() is threading.main_thread()
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS) if main and _HELD_SIGNALS else None
        written: dict[str, Path] = {}
        try:
            ordered = [t for t in self._targets.values() if not t.last] + [t for t in self._targets.values() if t.last]
            for t in ordered:
                if t.temp is None:
                    continue
                try:
                    if t.in_place:
                        fd, t.fd = t.fd, None
                        with (
                            open(t.temp, "rb") as src,
                            os.fdopen(fd, "wb") if fd is not None else open(t.path, "wb") as dst,
                        ):
                            shutil.copyfileobj(src, dst)
                        os.unlink(t.temp)
                    else:
                        os.replace(t.temp, t.path)
                except OSError as exc:
                    raise OutputError(os_error_line(exc, t.path, t.what)) from None
                t.temp = None
                written[t.key] = t.path
            self._committed = True
        finally:
            if old_mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        self.discard()
        return written

    def discard(self) -> None:
        """Remove every temporary not yet published (the targets are untouched)."""
        for t in self._targets.values():
            if t.temp is not None:
                try:
                    os.unlink(t.temp)
                except OSError:
                    pass
                t.temp = None
            if t.fd is not None:
                os.close(t.fd)
                t.fd = None
        if self._stage_dir is not None:
            shutil.rmtree(self._stage_dir, ignore_errors=True)
            self._stage_dir = None

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, *exc) -> None:
        self.discard()

    @staticmethod
    def _temp_name(suffix: str) -> str:
        return f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}"


class _Writing:
    def __init__(self, target: _Target):
        self._t = target

    def __enter__(self):
        return self._t.temp

    def __exit__(self, typ, exc, tb):
        if exc is not None and isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise OutputError(os_error_line(exc, self._t.path, self._t.what)) from None
        return False


def _check_name_length(path: Path, what: str) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    try:
        name_max = os.pathconf(folder if folder.is_dir() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    if len(os.fsencode(path.name)) > name_max:
        raise OutputError(
            f"the {what} {quote(path)} cannot be written: the name is longer than this file system "
            f"allows ({name_max} bytes); choose a shorter name"
        )


def _is_char_device(path: Path) -> bool:
    try:
        return stat.S_ISCHR(os.stat(path).st_mode)
    except OSError:
        return False


def _same(a: Path, b: Path) -> bool:
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def write_text_file(path, text: str, *, inputs=(), what: str = "output") -> Path:
    """One text output (checked, written to a temporary, renamed into place); the target path."""
    with OutputSet(inputs) as out:
        out.add("file", path, what=what)
        out.check()
        out.write_text("file", text)
        return out.commit()["file"]


def nifti_stem(name: str, suffixes=(".nii.gz", ".nii", ".gz")) -> str:
    """``case.nii.gz`` -> ``case`` (the first of ``suffixes`` that ends the name, any case); else unchanged."""
    lower = name.lower()
    for suffix in suffixes:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name
