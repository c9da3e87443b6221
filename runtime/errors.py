"""Exceptions with a message a radiographer can act on, and the exit code the CLI maps them to.

Library code raises these; the CLI prints ``limbseg-rt: error: <message>`` on one line and exits
with ``exit_code`` (traceback only with ``--debug``). Exit codes are documented in the README.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug: unexpected exception
EXIT_USAGE = 2  # bad command line (argparse's own code)
EXIT_INPUT = 3  # the input image cannot be used (corrupt, wrong kind, bad geometry)
EXIT_MODEL = 4  # the model / checkpoint cannot be used
EXIT_PROVIDER = 5  # requested execution provider unavailable or silently dropped
EXIT_EMPTY = 6  # input is empty/constant: an all-background result was written and flagged
EXIT_PARITY = 7  # export parity checks failed; no model file written
EXIT_OUTPUT = 8  # output cannot be written where asked (or would overwrite the input)
EXIT_ENGINE = 9  # the inference engine (ONNX Runtime, OpenVINO) failed while running
EXIT_MEMORY = 10  # the inference engine ran out of memory
EXIT_SCANS_FAILED = 11  # batch: at least one scan of the cohort failed (the others were written)
EXIT_DEPENDENCY = 12  # a feature needs an optional extra that is not installed (e.g. [dicom])


class LimbsegError(Exception):
    """Base class. ``str(err)`` is the one-line message shown to the user."""

    exit_code: int = EXIT_INTERNAL


class InputError(LimbsegError):
    """The input image is unusable (corrupt, truncated, wrong dimensions, ambiguous geometry)."""

    exit_code = EXIT_INPUT


class ModelError(LimbsegError):
    """A model file or checkpoint is missing, corrupt, or inconsistent with its metadata."""

    exit_code = EXIT_MODEL


class ProviderError(LimbsegError):
    """An execution provider was requested that is not available or was dropped by ONNX Runtime."""

    exit_code = EXIT_PROVIDER


class OutputError(LimbsegError):
    """An output path is unusable (e.g. equal to the input, or its folder does not exist)."""

    exit_code = EXIT_OUTPUT


class EngineRunError(LimbsegError):
    """The engine loaded the model but failed while running it (kernel error, unsupported shape)."""

    exit_code = EXIT_ENGINE


class OutOfMemoryError(EngineRunError):
    """The engine could not allocate memory while running (host or device)."""

    exit_code = EXIT_MEMORY


class ParityError(LimbsegError):
    """One or more export parity checks failed. ``failures`` lists every one of them."""

    exit_code = EXIT_PARITY

    def __init__(self, failures: list[str]):
        self.failures = list(failures)
        super().__init__(f"{len(self.failures)} parity check(s) failed: " + "; ".join(self.failures))


class MissingDependencyError(LimbsegError):
    """An optional extra needed for this input or output is not installed; the message says how."""

    exit_code = EXIT_DEPENDENCY
