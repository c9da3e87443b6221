"""What CPU this is: the instruction sets that decide fp32/bf16/int8 speed, and the usable cores.

The speed gates depend on these. An int8 speed-up that is normal on an AVX-512 VNNI core is out of
reach on an AVX2-only one, so every gate message names the ISA it judged (``CpuInfo.isa``).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

# /proc/cpuinfo flag -> the name used in summaries (the x86 instruction sets that matter here).
FLAGS = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512F",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
}


@dataclass(frozen=True)
class CpuInfo:
    """The CPU's model name, the usable core count and the instruction sets of ``FLAGS`` it has."""

    model: str
    cores: int
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def has_vnni(self) -> bool:
        """An int8 dot-product instruction (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
        return bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8"})

    @property
    def isa(self) -> str:
        """The ISA class: ``amx``, ``avx512-vnni``, ``avx-vnni``, ``avx512``, ``avx2`` or ``baseline``."""
        if "amx_int8" in self.flags:
            return "amx"
        if "avx512_vnni" in self.flags:
            return "avx512-vnni"
        if "avx_vnni" in self.flags:
            return "avx-vnni"
        if "avx512f" in self.flags:
            return "avx512"
        if "avx2" in self.flags:
            return "avx2"
        return "baseline"

    def describe(self) -> str:
        names = ", ".join(FLAGS[f] for f in FLAGS if f in self.flags) or "none of AVX2/AVX-512/VNNI/BF16/AMX"
        return f"{self.model}, {self.cores} cores, ISA class {self.isa} ({names})"

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "cores": self.cores,
            "isa": self.isa,
            "flags": [FLAGS[f] for f in FLAGS if f in self.flags],
        }

    @classmethod
    def from_dict(cls, d: dict) -> CpuInfo:
        by_name = {v: k for k, v in FLAGS.items()}
        return cls(model=d["model"], cores=int(d["cores"]), flags=frozenset(by_name[f] for f in d["flags"]))


def parse_cpuinfo(text: str, cores: int) -> CpuInfo:
    """``CpuInfo`` from the text of ``/proc/cpuinfo`` (first processor's model name and flags)."""
    model, flags = "unknown CPU", frozenset[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split()) & FLAGS.keys()
    return CpuInfo(model=model, cores=cores, flags=flags)


def detect(cores: int | None = None) -> CpuInfo:
    """This machine's ``CpuInfo`` (Linux: ``/proc/cpuinfo``; elsewhere only the model name)."""
    n = cores if cores is not None else len(os.sched_getaffinity(0))
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text(), n)
    except OSError:
        return CpuInfo(model=platform.processor() or "unknown CPU", cores=n)
