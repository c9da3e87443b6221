"""What a network expects as input: the trained slice size and how intensities are normalised.

Both travel in the model metadata; ``runtime/inference/preprocess.py`` implements them.
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL_INPUT_HW: tuple[int, int] = (272, 240)
# How slices are resized to the model's input (runtime/inference/preprocess.py implements both).
RESAMPLING_MODES: tuple[str, ...] = ("exact", "antialias")


@dataclass(frozen=True)
class NormalisationSpec:
    """How intensities become ``[0, 1]``; travels in the model metadata."""

    method: str = "percentile"
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    scope: str = "volume"

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "lower_percentile": self.lower_percentile,
            "upper_percentile": self.upper_percentile,
            "scope": self.scope,
        }

    @classmethod
    def from_dict(cls, d: dict) -> NormalisationSpec:
        spec = cls(
            method=str(d.get("method", "percentile")),
            lower_percentile=float(d.get("lower_percentile", 0.5)),
            upper_percentile=float(d.get("upper_percentile", 99.5)),
            scope=str(d.get("scope", "volume")),
        )
        if spec.method != "percentile" or spec.scope not in ("volume", "slice"):
            raise ValueError(f"unsupported normalisation spec {d!r}")
        if not 0.0 <= spec.lower_percentile < spec.upper_percentile <= 100.0:
            raise ValueError(f"normalisation percentiles out of order: {d!r}")
        return spec
