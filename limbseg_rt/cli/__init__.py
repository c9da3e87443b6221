"""The ``limbseg-rt`` command: parse, call one library function, render the result.

Each sub-command lives in its own module of this package with two functions:
``add_parser(subparsers) -> argparse.ArgumentParser`` (arguments only, no heavy imports) and
``main(args) -> int`` (imports what it needs, calls the library, prints). Errors derived from
``LimbsegError`` become one line on stderr and their exit code; anything else is a bug (exit 1).
``--debug`` (accepted before or after the sub-command) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

# Sub-command name -> module in this package. Order is the order of ``--help``.
COMMANDS = {
    "run": "run",
    "batch": "batch",
    "serve": "serve",
    "demo": "demo",
    "info": "info",
    "tune": "tune",
    "phantom": "phantom",
    "evaluate": "evaluate",
    "train": "train",
    "export": "export",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="limbseg-rt",
        description="Lower-limb muscle segmentation of MRI (UNet / Attention UNet / SC-UNet) on ONNX Runtime.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMANDS.values():
        module = importlib.import_module(f"limbseg_rt.cli.{module_name}")
        p = module.add_parser(sub)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
        p.set_defaults(_main=module.main)
    return parser


def error_line(message: str) -> None:
    print(f"limbseg-rt: error: {message}", file=sys.stderr)


# Optional packages -> the extra that installs them (a missing one is exit 12 with this hint).
OPTIONAL_EXTRAS = {
    "torch": "export",
    "onnx": "export",
    "onnxscript": "export",
    "onnxconverter_common": "export",
    "scipy": "export",
    "PIL": "export",
    "tqdm": "export",
    "openvino": "openvino",
    "ray": "cluster",
    "pyarrow": "cluster",
}
_ENV_ERRNOS = {"ENOSPC", "EDQUOT", "EFBIG", "EROFS", "EACCES", "EPERM", "ENAMETOOLONG"}


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like Ctrl-C: the output set in progress is discarded."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def install_signal_handlers() -> dict:
    """SIGTERM/SIGHUP raise ``Interrupted`` once (repeats are ignored while cleaning up); SIGXFSZ
    (``ulimit -f``) is ignored so the write fails with EFBIG and a message instead of killing us.
    Returns the previous handlers (for ``restore_signal_handlers``); nothing outside the main thread."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    state = {"seen": False}

    def handler(signum, frame):
        if not state["seen"]:
            state["seen"] = True
            raise Interrupted(signum)

    previous = {}
    for name, how in (("SIGTERM", handler), ("SIGHUP", handler), ("SIGXFSZ", signal.SIG_IGN)):
        if hasattr(signal, name):
            num = getattr(signal, name)
            previous[num] = signal.signal(num, how)
    return previous


def restore_signal_handlers(previous: dict) -> None:
    for num, how in previous.items():
        signal.signal(num, how if how is not None else signal.SIG_DFL)


def environment_error(exc: BaseException):
    """A ``LimbsegError`` for an environment fault (missing optional package, disk full, read-only
    file system, permission, name too long) that escaped the library; None for anything else."""
    import errno

    from limbseg_rt.runtime.errors import MissingDependencyError, OutputError
    from limbseg_rt.runtime.io.outputs import os_error_line

    if isinstance(exc, ImportError) and exc.name:
        top = exc.name.split(".")[0]
        if top in OPTIONAL_EXTRAS:
            return MissingDependencyError(
                f"this command needs the optional package {top!r}, which is not installed; "
                f'install it with: pip install "limbseg-rt[{OPTIONAL_EXTRAS[top]}]"'
            )
    if isinstance(exc, OSError) and errno.errorcode.get(exc.errno or -1) in _ENV_ERRNOS:
        return OutputError(os_error_line(exc, exc.filename or "output", "file"))
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    previous = install_signal_handlers()
    try:
        return _dispatch(args)
    finally:
        restore_signal_handlers(previous)


def _dispatch(args) -> int:
    import logging
    import warnings

    # The error output is exactly one line: third-party warnings (numpy, nibabel's logger, onnx)
    # are silenced unless --debug; everything the user must know is in our own lines and the report.
    nib_log = logging.getLogger("nibabel")
    nib_level = nib_log.level
    try:
        with warnings.catch_warnings():
            if not args.debug:
                warnings.simplefilter("ignore")
                nib_log.setLevel(logging.ERROR)
            return _call(args)
    finally:
        nib_log.setLevel(nib_level)


def _call(args) -> int:
    from limbseg_rt.runtime.errors import EXIT_INTERNAL, LimbsegError

    try:
        return int(args._main(args) or 0)
    except LimbsegError as exc:
        if args.debug:
            raise
        error_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        error_line(
            f"interrupted ({signal.Signals(signum).name}); outputs are complete from this run or as they "
            "were before it; rerun the command"
        )
        return 128 + int(signum)
    except BrokenPipeError:
        # The reader of our output went away (`limbseg-rt info | head`): not an error of ours. Point
        # stdout at /dev/null so the interpreter's final flush cannot fail again; exit as a shell does.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + int(signal.SIGPIPE)
    except MemoryError:
        if args.debug:
            raise
        from limbseg_rt.runtime.errors import EXIT_MEMORY

        error_line(
            "ran out of memory; close other programs, use a smaller --batch-size, or use a machine with more memory"
        )
        return EXIT_MEMORY
    except (ImportError, OSError) as exc:
        mapped = environment_error(exc)
        if mapped is None or args.debug:
            raise
        error_line(str(mapped))
        return mapped.exit_code
    except Exception as exc:  # a bug, not a user error: say so, keep it on one line
        if args.debug:
            raise
        error_line(
            f"internal error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); rerun with --debug and report it"
        )
        return EXIT_INTERNAL
