"""Checkpoints in the authors' ``.pth.tar`` format: ``{"state_dict": ..., "optimizer": ...}``.

Loading never executes code: ``torch.load(..., weights_only=True)`` refuses any pickle that names a
Python callable, and we turn that refusal into a one-line ``ModelError``. Accepted layouts:

- the authors' dict with a ``"state_dict"`` entry (other entries such as ``"optimizer"``,
  ``"epoch"``, ``"arch"``, ``"features"`` are returned to the caller untouched);
- a bare state dict (``torch.save(model.state_dict(), path)``): a mapping whose values are all
  tensors. It is common in the wild and unambiguous, so we accept it rather than make users resave.

A ``"module."`` prefix (``nn.DataParallel``) is stripped when *every* key carries it. Keys must match
the model exactly (missing, unexpected and wrong-shape keys are all reported in one error); the only
tolerated difference is a missing BatchNorm ``num_batches_tracked`` counter (older PyTorch did not
save it and it does not affect inference).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from limbseg_rt.runtime.errors import ModelError

_PREFIX = "module."
_MAX_NAMED = 12  # keys named per category before "... and N more"


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMED])
    more = len(items) - _MAX_NAMED
    return shown + (f", ... and {more} more" if more > 0 else "")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


def read_checkpoint(path) -> dict:
    """Load a checkpoint file without executing code.

    Returns a dict with ``"state_dict"`` (``{key: tensor}``, ``module.`` prefix stripped) plus any
    other entries the file holds. Raises ``ModelError`` (one line) for a missing file, a file that is
    not a PyTorch checkpoint, a pickle that would run code, or a dict without weights.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; our error says it all
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        text = str(exc)
        refused = "Weights only load failed" in text
        # torch names the refused callable, e.g. "unsupported GLOBAL posix.system": worth showing
        detail = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln), "")
        if refused and detail:
            raise ModelError(
                f"{path.name} was refused: it contains Python objects that would run code when loaded"
                f" ({_one_line(detail)[:150]}); only plain weight checkpoints are accepted"
            ) from None
        if refused:
            why = next((ln.strip() for ln in text.splitlines() if ln.strip().startswith("Unsupported")), "")
            raise ModelError(
                f"{path.name} uses pickle features the safe loader refuses ({_one_line(why)[:100] or 'see --debug'}); "
                "re-save it with torch.save(...) defaults"
            ) from None
        raise ModelError(
            f"{path.name} is not a readable PyTorch checkpoint ({type(exc).__name__}: {_one_line(text)[:150]})"
        ) from None
    if not isinstance(obj, Mapping):
        raise ModelError(f"{path.name} is not a checkpoint: it holds a {type(obj).__name__}, not a dict of weights")
    if "state_dict" in obj:
        ckpt = dict(obj)
        state = ckpt["state_dict"]
        if not isinstance(state, Mapping):
            raise ModelError(f"{path.name}: 'state_dict' is a {type(state).__name__}, not a dict of weights")
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        ckpt, state = {}, obj
    else:
        keys = ", ".join(map(str, list(obj)[:8]))
        raise ModelError(f"{path.name} is not a checkpoint: no 'state_dict' entry (found keys: {keys or 'none'})")
    state = dict(state)
    if state and all(isinstance(k, str) and k.startswith(_PREFIX) for k in state):
        state = {k[len(_PREFIX) :]: v for k, v in state.items()}
    ckpt["state_dict"] = state
    return ckpt


def check_state_dict(model: nn.Module, state: Mapping, *, source: str = "checkpoint") -> None:
    """Raise one ``ModelError`` naming every missing, unexpected and wrong-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = []
    for k, v in state.items():
        if k not in expected:
            continue
        if not isinstance(v, torch.Tensor):
            wrong.append(f"{k} (not a tensor)")
        elif tuple(v.shape) != tuple(expected[k].shape):
            wrong.append(f"{k} (checkpoint {list(v.shape)} vs model {list(expected[k].shape)})")
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {_listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {_listing(unexpected)}")
    if wrong:
        parts.append(f"{len(wrong)} shape mismatch(es): {_listing(wrong)}")
    if parts:
        name = type(model).__name__
        feats = getattr(model, "features", None)
        hint = f"{name}(features={tuple(feats)})" if feats is not None else name
        raise ModelError(f"{source} does not fit {hint}: " + "; ".join(parts) + " (wrong architecture or --features?)")


def load_checkpoint(model: nn.Module, path) -> dict:
    """Load weights from ``path`` into ``model`` (in place, strict) and return the checkpoint dict.

    The returned dict holds ``"state_dict"`` and whatever else the file carried (``"optimizer"``,
    ``"epoch"``, ``"features"``, ...). Raises ``ModelError`` as described in the module docstring.
    """
    ckpt = read_checkpoint(path)
    state = ckpt["state_dict"]
    check_state_dict(model, state, source=Path(path).name)
    model.load_state_dict(state, strict=False)  # strictness already enforced with a better message
    return ckpt


def save_checkpoint(model: nn.Module, path, *, optimizer=None, extra: Mapping | None = None) -> Path:
    """Write ``{"state_dict": ..., "optimizer": ..., **extra}`` to ``path`` (authors' ``.pth.tar``).

    ``extra`` values must be plain data (numbers, strings, lists, tuples, dicts, tensors) so the file
    stays loadable with ``weights_only=True``; typical keys: ``"arch"``, ``"features"``, ``"epoch"``.
    The file is written to a temporary name and renamed, so a crash never leaves half a checkpoint.
    """
    path = Path(path)
    ckpt = {"state_dict": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer is not None else None}
    for k, v in (extra or {}).items():
        if k in ckpt:
            raise ValueError(f"extra key {k!r} would overwrite the checkpoint's own entry")
        ckpt[k] = list(v) if isinstance(v, tuple) else v
    from limbseg_rt.runtime.io.outputs import OutputSet

    with OutputSet() as out:  # a temporary beside it, renamed into place; umask mode
        out.add("checkpoint", path, what="checkpoint")
        with out.writing("checkpoint"):
            torch.save(ckpt, str(out.temp("checkpoint")))
        return out.commit()["checkpoint"]
