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
import sys

# Sub-command name -> module in this package. Order is the order of ``--help``.
COMMANDS = {
    "run": "run",
    "batch": "batch",
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
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"limbseg_rt.cli.{module_name}")
        p = module.add_parser(sub)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
        p.set_defaults(_main=module.main)
    return parser


def error_line(message: str) -> None:
    print(f"limbseg-rt: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from limbseg_rt.runtime.errors import EXIT_INTERNAL, LimbsegError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except LimbsegError as exc:
        if args.debug:
            raise
        error_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return exc.exit_code
    except KeyboardInterrupt:
        error_line("interrupted")
        return 130
    except Exception as exc:  # a bug, not a user error: say so, keep it on one line
        if args.debug:
            raise
        error_line(f"internal error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); rerun with --debug and report it")
        return EXIT_INTERNAL
