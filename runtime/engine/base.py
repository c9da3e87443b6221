"""The runner base class: one ``infer`` that checks the feed, then the engine's own ``infer_impl``.

A runner wraps an inference engine that is already built (an ONNX Runtime session, an OpenVINO
compiled model); building lives in each engine's module, choosing in ``runners.create_runner``.
``Runner.infer`` validates the batch against the model metadata once for every engine, so an engine
subclass only implements ``infer_impl`` (run prepared feeds) and ``describe_impl`` (its own details).

Buffers: ``infer`` returns a new array that the caller owns; no later call overwrites it. Engines
may reuse their *internal* buffers between calls (OpenVINO shares its output memory with the next
request), so ``infer_impl`` must copy anything it returns out of such a buffer. The cost of one
fresh ``[N, C, H, W]`` float32 array is negligible next to a convolution network.

Runners are not thread-safe; use one per thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from limbseg_rt.runtime.errors import EngineRunError, ModelError, OutOfMemoryError, ProviderError
from limbseg_rt.runtime.model.metadata import GraphTensor, ModelMetadata, check_graph


def check_feeds(md: ModelMetadata, image: np.ndarray, position, max_batch: int | None) -> dict[str, np.ndarray]:
    """Validated, contiguous float32 feeds. ``image`` [N,C,H,W] with C = ``md.in_channels``;
    ``position`` [N] iff the model takes it. Raises ``ValueError`` on misuse (a programming error)."""
    image = np.ascontiguousarray(image, dtype=np.float32)
    if image.ndim != 4 or image.shape[1] != md.in_channels or image.shape[0] < 1:
        raise ValueError(f"image must be float32 [N,{md.in_channels},H,W] with N >= 1; got shape {image.shape}")
    if max_batch is not None and image.shape[0] > max_batch:
        raise ValueError(f"batch of {image.shape[0]} exceeds this runner's max_batch={max_batch}")
    feeds = {"image": image}
    if md.needs_position:
        if position is None:
            raise ValueError(f"{md.architecture} needs a position input (float32 [N])")
        pos = np.ascontiguousarray(position, dtype=np.float32).reshape(-1)
        if pos.shape[0] != image.shape[0]:
            raise ValueError(f"position has {pos.shape[0]} values for a batch of {image.shape[0]}")
        feeds["position"] = pos
    elif position is not None:
        raise ValueError(f"{md.architecture} takes no position input")
    return feeds


def check_model_graph(md: ModelMetadata, inputs: list[GraphTensor], outputs: list[GraphTensor], path: Path) -> None:
    """``ModelError`` (exit 4) naming the file when the graph disagrees with its metadata
    (see ``metadata.check_graph``): checked at load time, before any scan is read."""
    try:
        check_graph(md, inputs, outputs)
    except ValueError as exc:
        raise ModelError(f"{path.name}: the model's graph does not match its metadata: {exc}") from None


def fallback_note(requested: str, got: str, flexible: bool, allow_fallback: bool) -> str | None:
    """None when ``got`` (short name in use) is ``requested``; else a note, or ``ProviderError``."""
    if got == requested:
        return None
    if not (flexible or allow_fallback):
        raise ProviderError(
            f"execution provider {requested!r} was requested but ONNX Runtime could not initialise it and would "
            f"run on {got!r} (missing libraries or a refused option; 'limbseg-rt info' shows what is usable); "
            f"fix the {requested} installation, choose --provider {got}, or pass --allow-fallback to accept this"
        )
    how = "automatic choice" if flexible else "--allow-fallback"
    return f"requested {requested}, running on {got}: ONNX Runtime could not use {requested} ({how})"


_OOM_WORDS = ("out of memory", "bad_alloc", "failed to allocate", "allocation failed", "cannot allocate")


def run_failure(engine: str, exc: BaseException, model_path: Path) -> EngineRunError:
    """The typed error for an engine that failed while running (not while loading): out of memory
    (``OutOfMemoryError``, exit 10) when the engine says so, else ``EngineRunError`` (exit 9)."""
    first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    if isinstance(exc, MemoryError) or any(w in str(exc).lower() for w in _OOM_WORDS):
        return OutOfMemoryError(
            f"{engine} ran out of memory running {model_path.name} ({first}); use a smaller --batch-size "
            "or close other programs"
        )
    return EngineRunError(
        f"{engine} failed while running {model_path.name} ({first}); the model may not suit this "
        "engine: try --provider cpu or another model file"
    )


class Runner:
    """A built engine that runs one model. Attributes shared by every engine:

    ``metadata`` (``ModelMetadata`` of the file), ``model_path``, ``model_sha256`` (hex of the file),
    ``provider`` (short name actually in use: ``tensorrt`` | ``cuda`` | ``openvino`` | ``cpu``),
    ``precision`` (what the engine really computes in, read back: ``fp32`` | ``fp16`` | ``int8`` |
    ``bf16``), ``requested`` (provider as the user asked), ``threads``, ``max_batch`` (largest N a
    call may pass), ``fallback`` (one-line note when not running on the requested provider, else None).
    """

    engine: str = ""  # "onnxruntime" | "openvino"

    def __init__(
        self,
        *,
        metadata: ModelMetadata,
        model_path: Path,
        model_sha256: str,
        provider: str,
        precision: str,
        requested: str,
        threads: int,
        max_batch: int,
        fallback: str | None = None,
    ):
        self.metadata = metadata
        self.model_path = Path(model_path)
        self.model_sha256 = model_sha256
        self.provider = provider
        self.precision = precision
        self.requested = requested
        self.threads = threads
        self.max_batch = max_batch
        self.fallback = fallback
        # How the precision was decided (``runners.choose_precision``), set by ``create_runner``.
        self.precision_choice: dict | None = None

    def infer(self, image: np.ndarray, position: np.ndarray | None = None) -> np.ndarray:
        """Logits float32 [N,C,H,W] for ``image`` float32 [N,1,H,W] (and ``position`` float32 [N]
        for SC-UNet). Misuse is a ``ValueError``; a failure inside the engine is an
        ``EngineRunError`` (exit 9) or ``OutOfMemoryError`` (exit 10)."""
        feeds = check_feeds(self.metadata, image, position, self.max_batch)
        try:
            return self.infer_impl(feeds)
        except MemoryError as exc:
            raise run_failure(self.engine, exc, self.model_path) from exc

    # The pipeline's ``predict(image, position)`` callable.
    predict = infer

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run checked feeds (``image``, and ``position`` when the model takes it); return logits
        the caller may keep. Engine failures become ``run_failure(...)``."""
        raise NotImplementedError

    def describe(self) -> dict:
        """What ran, for the run report: the shared attributes plus ``describe_impl()``."""
        return {
            "engine": self.engine,
            "provider_requested": self.requested,
            "provider": self.provider,
            "precision": self.precision,
            "model_precision": self.metadata.precision,
            "threads": self.threads,
            "max_batch": self.max_batch,
            "fallback": self.fallback,
            "model_path": str(self.model_path),
            "model_sha256": self.model_sha256,
            "precision_choice": self.precision_choice,
            **self.describe_impl(),
        }

    def describe_impl(self) -> dict:
        return {}

    def close(self) -> None:
        """Release the engine; the runner cannot run afterwards."""
