"""One benchmark session: which models exist, engines built once per model, cached measurements.

Engines of one model at a time stay alive (a full-size UNet session holds 100-400 MB per engine);
asking for another model's engine closes the previous model's engines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import _harness as H
import _models as M
import pytest

SMALL_FEATURES = (16, 32, 64, 128)  # quick subset: the paper's UNet at 1/4 width (~1/16 of the work)
ENGINE_LABELS = {
    "pytorch": "pytorch-eager",
    "cpu": "onnxruntime-cpu",
    "openvino": "openvino-runtime",
    "cuda": "onnxruntime-cuda",
    "tensorrt": "onnxruntime-tensorrt",
}


@dataclass
class BenchSession:
    cache_root: Path
    provider_skips: dict
    full: bool
    demo_dir: str | None
    results: object
    _models: dict = field(default_factory=dict)
    _engines: dict = field(default_factory=dict)
    _engine_model: str | None = None
    _torch: dict = field(default_factory=dict)
    _macs: dict = field(default_factory=dict)
    _data: dict = field(default_factory=dict)
    _demo: list | None = None

    # ------------------------------------------------------------------ models
    def precisions_needed(self) -> list[str]:
        need = ["fp32"]
        if self.provider_skips.get("cpu") is None or self.provider_skips.get("openvino") is None:
            need.append("int8")
        if self.provider_skips.get("cuda") is None:
            need.append("fp16")
        return need

    def model(self, name: str) -> M.BenchModel:
        """``small-unet``, a paper architecture name (random weights), or ``demo <arch>`` (trained)."""
        if name not in self._models:
            if name.startswith("demo "):
                found = {m.name: m for m in self.demo_models()}
                if name not in found:
                    pytest.skip(f"no bundled demo model {name!r}")
                self._models[name] = found[name]
            elif name == "small-unet":
                self._models[name] = M.ensure_exported(
                    "unet", self.precisions_needed(), root=self.cache_root, features=SMALL_FEATURES
                )
            else:
                self._models[name] = M.ensure_exported(name, self.precisions_needed(), root=self.cache_root)
        return self._models[name]

    def demo_models(self) -> list[M.BenchModel]:
        if self._demo is None:
            self._demo = M.demo_models(Path(self.demo_dir) if self.demo_dir else None)
        return self._demo

    def macs(self, name: str) -> int:
        """Multiply-accumulates per slice at the model's slice size (its fp32 graph, else its int8 one:
        a QDQ graph has the same convolutions)."""
        if name not in self._macs:
            m = self.model(name)
            self._macs[name] = H.onnx_macs(m.paths.get("fp32") or next(iter(m.paths.values())), m.hw)
        return self._macs[name]

    # ------------------------------------------------------------------ engines
    def skip_reason(self, name: str, key: tuple[str, str]) -> str | None:
        provider, precision = key
        m = self.model(name)
        if provider == "pytorch":
            return None if m.checkpoint is not None else "demo models ship ONNX only (no PyTorch weights)"
        reason = self.provider_skips.get(provider)
        if reason:
            return reason
        if precision == "bf16":
            from limbseg_rt.runtime.engine.cpu import detect
            from limbseg_rt.runtime.engine.precision_profile import has_bf16

            cpu = detect()
            if not has_bf16(cpu):
                return f"bf16 needs AVX512-BF16 or AMX-BF16; this CPU has neither (ISA class {cpu.isa})"
        file_precision = "fp32" if provider == "tensorrt" or precision == "bf16" else precision
        if file_precision not in m.paths:
            return f"{m.name} has no {file_precision} file"
        return None

    def engine(self, name: str, key: tuple[str, str]) -> H.Engine:
        """The engine ``key`` = (provider, precision) for model ``name``; ``pytest.skip`` with the reason
        when it cannot run here; ``pytest.fail`` if the engine runs another precision than asked."""
        reason = self.skip_reason(name, key)
        if reason:
            pytest.skip(reason)
        if self._engine_model != name:
            self.close()
            self._engine_model = name
        if key not in self._engines:
            self._engines[key] = self._build(name, key)
        eng = self._engines[key]
        want = key[1]
        if eng.precision != want:
            pytest.fail(
                f"{eng.label} was asked for {want} but runs {eng.precision} "
                f"(read back from the engine: {eng.describe.get('conv_runtime_precisions', '')})"
            )
        return eng

    def _build(self, name: str, key: tuple[str, str]) -> H.Engine:
        provider, precision = key
        m = self.model(name)
        if provider == "pytorch":
            return H.torch_engine(self.torch_model(name))
        if provider == "tensorrt":
            return H.runner_engine(m.paths["fp32"], "tensorrt", fp16=precision == "fp16", cache_dir=self.cache_root)
        if precision == "bf16":
            return H.runner_engine(m.paths["fp32"], provider, precision="bf16")
        return H.runner_engine(m.paths[precision], provider)

    def torch_model(self, name: str):
        if name not in self._torch:
            from limbseg_rt.models import create_model, load_checkpoint

            m = self.model(name)
            net = create_model(m.arch, features=m.features)
            load_checkpoint(net, m.checkpoint)
            self._torch = {name: net.eval()}  # one reference network alive at a time
        return self._torch[name]

    def close(self) -> None:
        for eng in self._engines.values():
            eng.close()
        self._engines = {}
        self._engine_model = None

    # ------------------------------------------------------------------ data
    def phantom_slices(self, hw: tuple[int, int], slices: int, seed: int = 7301):
        """Preprocessed phantom slices (same for every engine): images, positions, phantom."""
        key = (hw, slices, seed)
        if key not in self._data:
            self._data[key] = H.phantom_model_slices(seed, slices=slices, hw=hw)
        return self._data[key]

    def timing_input(self, name: str, batch: int):
        m = self.model(name)
        import numpy as np

        images = M.seeded_slices(batch, m.hw)
        pos = np.linspace(0.1, 0.9, batch, dtype=np.float32) if m.needs_position else None
        return images, pos
