"""What ``--precision auto`` runs on this machine: a measured choice when ``limbseg-rt tune`` made one,
else a stated rule. Either way the choice and its reason travel in the run report.

Which precision is fastest depends on the CPU, not on the model alone: int8 gains most where the CPU
has an int8 dot-product instruction (AVX512-VNNI, AVX-VNNI, AMX-INT8) and little on AVX2 alone, and
on a CPU with AVX512-BF16 or AMX-BF16 the OpenVINO engine can run the fp32 file in bf16, which may
beat int8 at better agreement. So the choice is measured (``runtime/tuning.py``) and kept in a
profile file, one entry per (provider, architecture):

    {"entries": {"<provider>/<arch>": {"precision": "int8", "signature": {...},
                 "measured": {"fp32": {"s_per_slice": 0.31, "agreement": 1.0}, ...},
                 "min_agreement": 0.97, "tuned_at": "2026-12-03T12:00:00Z"}}}

An entry is used only while its ``signature`` still matches: the CPU (model name, instruction sets,
usable cores), the engine versions and the SHA-256 of every candidate model file. Anything else
(a new CPU, an upgraded ONNX Runtime, a replaced model file, another core count) makes the entry
stale and the rule applies again, saying so.

The profile lives in ``$LIMBSEG_RT_CACHE`` if set, else ``$XDG_CACHE_HOME/limbseg-rt``, else
``~/.cache/limbseg-rt``, as ``precision-profile.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from limbseg_rt.runtime.engine.cpu import FLAGS, CpuInfo, detect
from limbseg_rt.runtime.hashing import sha256_file
from limbseg_rt.runtime.model.bundled import AUTO_PRECISION

PROFILE_NAME = "precision-profile.json"
# The least mean per-muscle Dice against the fp32 labels a candidate needs to be chosen: the same
# bar the exporter's int8 parity gate sets (``export/spec.py``: min_muscle_dice 0.97).
MIN_AGREEMENT = 0.97
# Precisions each CPU provider can run from the bundled files (bf16: the fp32 file in bf16 on the
# OpenVINO engine, only on CPUs with a bf16 instruction).
CPU_PROVIDERS = ("cpu", "openvino")
# The rule when nothing was measured: the bundled file order per provider, best first.
RULE = AUTO_PRECISION


def has_bf16(cpu: CpuInfo) -> bool:
    """A bf16 arithmetic instruction (AVX512-BF16 or AMX-BF16)."""
    return bool(cpu.flags & {"avx512_bf16", "amx_bf16"})


def profile_path() -> Path:
    """Where the profile file lives (see the module docstring)."""
    root = os.environ.get("LIMBSEG_RT_CACHE")
    if root:
        return Path(root).expanduser() / PROFILE_NAME
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "limbseg-rt" / PROFILE_NAME


def engine_versions() -> dict[str, str]:
    """Versions of the engines whose speed the profile measured (absent ones as ``"absent"``)."""
    import onnxruntime

    out = {"onnxruntime": onnxruntime.__version__}
    try:
        import openvino

        out["openvino"] = openvino.get_version()
    except Exception:
        out["openvino"] = "absent"
    return out


def signature(files: dict[str, Path], cpu: CpuInfo | None = None) -> dict:
    """What an entry was measured on. ``files``: candidate precision -> model file."""
    cpu = cpu or detect()
    return {
        "cpu": cpu.model,
        "isa": cpu.isa,
        "flags": [FLAGS[f] for f in FLAGS if f in cpu.flags],
        "cores": cpu.cores,
        "engines": engine_versions(),
        "files": {p: sha256_file(path) for p, path in sorted(files.items())},
    }


@dataclass(frozen=True)
class AutoChoice:
    """The precision ``auto`` became, how (``"measured"`` or ``"rule"``) and why, in one sentence.
    ``measured``: per candidate ``{"s_per_slice", "agreement"}`` when ``how == "measured"``."""

    precision: str
    how: str
    why: str
    measured: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "asked": "auto",
            "chose": self.precision,
            "how": self.how,
            "why": self.why,
            "measured": self.measured or None,
        }


def load_profile(path: Path | None = None) -> dict:
    """The profile's entries (``{}`` when there is no profile or it is unreadable: the rule applies)."""
    path = path or profile_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def save_entries(new: dict, path: Path | None = None) -> Path:
    """Merge ``new`` (key -> entry) into the profile file, written atomically (temporary + rename)."""
    path = path or profile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = load_profile(path)
    entries.update(new)
    from limbseg_rt.runtime.io.outputs import write_text_file  # one owner of output files

    return write_text_file(
        path, json.dumps({"entries": entries}, indent=2, sort_keys=True) + "\n", what="precision profile"
    )


def entry_key(provider: str, arch: str) -> str:
    return f"{provider}/{arch}"


def rule_choice(provider: str, have: set[str], cpu: CpuInfo, stale: str | None = None) -> AutoChoice:
    """The stated rule: the first of ``RULE[provider]`` that is bundled. ``stale``: why a profile
    entry was not used, if there was one."""
    for p in RULE[provider]:
        if p in have:
            break
    else:  # nothing the rule knows is bundled; resolve_model reports it
        p = RULE[provider][0]
    if provider in CPU_PROVIDERS:
        only = f"only {p} is bundled" if have == {p} else f"rule: {' before '.join(RULE[provider])} on {provider}"
        hint = "" if have == {p} else "; `limbseg-rt tune` measures which is faster here"
        why = f"{only} (CPU ISA class {cpu.isa}; not measured on this machine{', ' + stale if stale else ''}){hint}"
    else:
        why = f"rule: fp32 on {provider} (TensorRT's fp16 is asked with --precision fp16)"
    return AutoChoice(p, "rule", why)


def auto_precision(
    provider: str, arch: str, files: dict[str, Path], *, profile: dict | None = None, cpu: CpuInfo | None = None
) -> AutoChoice:
    """What ``--precision auto`` runs for bundled ``arch`` on ``provider``. ``files``: the bundled
    candidate files (precision -> path). ``profile``: entries as ``load_profile()`` (injectable)."""
    cpu = cpu or detect()
    have = set(files)
    if provider not in CPU_PROVIDERS:
        return rule_choice(provider, have, cpu)
    entries = load_profile() if profile is None else profile
    entry = entries.get(entry_key(provider, arch))
    if not isinstance(entry, dict):
        return rule_choice(provider, have, cpu)
    now = signature(files, cpu)
    then = entry.get("signature", {})
    changed = [k for k in ("cpu", "flags", "cores", "engines", "files") if now.get(k) != then.get(k)]
    chosen = entry.get("precision")
    if changed or (chosen not in have and not (chosen == "bf16" and "fp32" in have)):
        return rule_choice(
            provider, have, cpu, stale=f"the profile entry is stale ({', '.join(changed) or 'file gone'} changed)"
        )
    measured = entry.get("measured", {})
    best = measured.get(chosen, {})
    ref = measured.get("fp32", {})
    speed = ""
    if ref.get("s_per_slice") and best.get("s_per_slice") and chosen != "fp32":
        speed = f", {ref['s_per_slice'] / best['s_per_slice']:.2f}x fp32's speed"
    why = (
        f"measured by `limbseg-rt tune` on this CPU ({cpu.isa}) {entry.get('tuned_at', '')}: fastest with "
        f"agreement >= {entry.get('min_agreement', MIN_AGREEMENT)} vs fp32 "
        f"({best.get('s_per_slice', float('nan')) * 1000:.0f} ms/slice{speed})"
    )
    return AutoChoice(chosen, "measured", why, measured)


def pick(measured: dict, min_agreement: float = MIN_AGREEMENT) -> str:
    """The fastest candidate in ``measured`` (precision -> ``{"s_per_slice", "agreement"}``) whose
    agreement is at least ``min_agreement``; fp32 (agreement 1 by definition) when none other is."""
    ok = {p: m for p, m in measured.items() if m.get("agreement", 0.0) >= min_agreement}
    if not ok:
        return "fp32" if "fp32" in measured else min(measured, key=lambda p: measured[p]["s_per_slice"])
    return min(ok, key=lambda p: ok[p]["s_per_slice"])
