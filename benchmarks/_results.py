"""What a benchmark session found, as a markdown table, JSON and a PNG chart.

Rows are keyed (model, engine, precision, batch). Latency tests fill ms/slice and GFLOP/s, accuracy
tests fill agreement/Dice for every batch row of that engine, the subprocess runs fill peak RSS.
Gates are listed with their measured value, their threshold and PASS/FAIL.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Row:
    model: str
    engine: str
    precision: str
    batch: int
    ms_per_slice: float | None = None
    slices_per_s: float | None = None
    gflops: float | None = None
    pct_ceiling: float | None = None
    speedup_vs_pytorch: float | None = None
    peak_rss_mib: float | None = None
    agreement: float | None = None
    min_muscle_dice: float | None = None
    note: str = ""


@dataclass
class Results:
    rows: dict = field(default_factory=dict)
    ceilings: object = None
    gates: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)  # per model+engine: agreement/Dice/RVE (+ vs ground truth)
    shift: list = field(default_factory=list)  # acquisition-shift cases: model, case, DSC, |RVE|, HD95
    runs: list = field(default_factory=list)  # end-to-end runs: stages, peak RSS
    machine: dict = field(default_factory=dict)  # cores, load averages at start and end

    def empty(self) -> bool:
        return not (self.rows or self.gates or self.accuracy or self.runs or self.shift)

    def row(self, model: str, engine: str, precision: str, batch: int) -> Row:
        key = (model, engine, precision, batch)
        if key not in self.rows:
            self.rows[key] = Row(model, engine, precision, batch)
        return self.rows[key]

    def set_accuracy(self, model: str, engine: str, precision: str, **values) -> None:
        """Attach accuracy numbers to every batch row of (model, engine, precision)."""
        targets = [r for r in self.rows.values() if (r.model, r.engine, r.precision) == (model, engine, precision)]
        for r in targets or [self.row(model, engine, precision, 1)]:
            for k, v in values.items():
                setattr(r, k, v)

    def gate(self, name: str, value: float, threshold: str, passed: bool, detail: str = "") -> None:
        self.gates.append({"gate": name, "value": value, "threshold": threshold, "passed": passed, "detail": detail})

    def fill_speedups(self) -> None:
        """x PyTorch per row; accuracy numbers copied to the other batch rows of the same engine."""
        for r in self.rows.values():
            if r.agreement is None:
                twin = next(
                    (
                        o
                        for o in self.rows.values()
                        if (o.model, o.engine, o.precision) == (r.model, r.engine, r.precision)
                        and o.agreement is not None
                    ),
                    None,
                )
                if twin is not None:
                    r.agreement, r.min_muscle_dice = twin.agreement, twin.min_muscle_dice
            ref = self.rows.get((r.model, "pytorch-eager", "fp32", r.batch))
            if ref and ref.ms_per_slice and r.ms_per_slice:
                r.speedup_vs_pytorch = ref.ms_per_slice / r.ms_per_slice

    # ------------------------------------------------------------------ rendering
    def markdown(self) -> str:
        self.fill_speedups()
        f = _fmt
        lines = []
        if self.machine:
            m = self.machine
            lines.append(
                f"Machine: {m.get('cpus')} usable cores, {m.get('cpu_model', '?')}, ISA class "
                f"{m.get('isa', '?')} ({', '.join(m.get('isa_flags', [])) or 'no AVX2/AVX-512'}); 1-min load average "
                f"{m.get('load_start', float('nan')):.1f} at start, {m.get('load_end', float('nan')):.1f} at end."
            )
            if max(m.get("load_start", 0), m.get("load_end", 0)) > 1.5 * (m.get("cpus") or 1):
                lines.append(
                    "WARNING: the machine was busy with other work; ratios between engines are still "
                    "measured side by side, but PyTorch (OpenMP) suffers more than ONNX Runtime/OpenVINO "
                    "from oversubscription: rerun on a quiet machine before trusting the speed-ups."
                )
            lines.append("")
        if self.ceilings is not None:
            c = self.ceilings
            lines.append(
                f"Ceilings this run: {c.describe()}; judged against fp32 {c.sgemm_gflops:.0f} GFLOP/s, "
                f"int8 {c.int8_gemm_gops:.0f} GOPS ({c.int8_source or 'none plausible'})"
                + (f", bf16 {c.for_precision('bf16'):.0f} GFLOP/s" if c.for_precision("bf16") else "")
                + "\n"
            )
        if self.rows:
            lines += [
                "| model | engine | precision | batch | ms/slice | slices/s | x PyTorch | GFLOP/s | % ceiling "
                "| peak RSS MiB | agreement vs fp32 ref | min muscle Dice |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for r in sorted(self.rows.values(), key=lambda r: (r.model, r.batch, r.engine, r.precision)):
                lines.append(
                    f"| {r.model} | {r.engine} | {r.precision} | {r.batch} | {f(r.ms_per_slice, '.1f')} | "
                    f"{f(1e3 / r.ms_per_slice if r.ms_per_slice else None, '.2f')} | {f(r.speedup_vs_pytorch, '.2f')} | {f(r.gflops, '.0f')} | "
                    f"{f(r.pct_ceiling, '.0f')} | {f(r.peak_rss_mib, '.0f')} | "
                    f"{f(None if r.agreement is None else 100 * r.agreement, '.3f', '%')} | {f(r.min_muscle_dice, '.4f')} |"
                )
        if self.accuracy:
            lines += [
                "",
                "| model | engine | precision | vs | agreement | min Dice | max abs RVE % | mean DSC | mean RVE % | mean HD mm |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            for a in self.accuracy:
                lines.append(
                    f"| {a['model']} | {a['engine']} | {a['precision']} | {a['reference']} | "
                    f"{f(a.get('agreement') and 100 * a['agreement'], '.3f', '%')} | {f(a.get('min_dice'), '.4f')} | "
                    f"{f(a.get('max_abs_rve'), '.2f')} | {f(a.get('mean_dsc'), '.4f')} | {f(a.get('mean_rve'), '.2f')} | "
                    f"{f(a.get('mean_hd_mm'), '.1f')} |"
                )
        if self.shift:
            lines += [
                "",
                "| acquisition shift (phantom 200) | model | fit | mean DSC | mean abs RVE % | mean HD95 mm "
                "| false end-slice muscles |",
                "|---|---|---|---|---|---|---|",
            ]
            for a in self.shift:
                lines.append(
                    f"| {a['case']} | {a['model']} | {a.get('fit', '-')} | {f(a['dsc'], '.3f')} | "
                    f"{f(a['abs_rve'], '.1f')} | {f(a['hd95_mm'], '.1f')} | {a.get('false_end_muscles', '-')} |"
                )
        if self.runs:
            lines += [
                "",
                "| end-to-end run | engine | slices | wall s | model-only s | read | preprocess | infer | postprocess | write | peak RSS MiB |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for r in self.runs:
                st = r.get("stages", {})
                lines.append(
                    f"| {r['what']} | {r['engine']} | {r['slices']} | {f(r.get('wall_s'), '.2f')} | {f(r.get('model_s'), '.2f')} | "
                    + " | ".join(f(st.get(k), ".2f") for k in ("read", "preprocess", "infer", "postprocess", "write"))
                    + f" | {f(r.get('peak_rss_mib'), '.0f')} |"
                )
        if self.gates:
            lines += ["", "| gate | value | threshold | result | detail |", "|---|---|---|---|---|"]
            for g in self.gates:
                detail = str(g.get("detail") or "").replace("|", "/").replace("\n", " ")
                lines.append(
                    f"| {g['gate']} | {f(g['value'], '.4g')} | {g['threshold']} | "
                    f"{'PASS' if g['passed'] else 'FAIL'} | {detail} |"
                )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        self.fill_speedups()
        return {
            "machine": self.machine,
            "ceilings": self.ceilings.to_dict() if self.ceilings is not None else None,
            "rows": [asdict(r) for r in self.rows.values()],
            "accuracy": self.accuracy,
            "shift": self.shift,
            "runs": self.runs,
            "gates": self.gates,
        }


def _fmt(v, spec: str, suffix: str = "") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:{spec}}{suffix}"


def chart(results: Results, path: Path) -> Path | None:
    """Bar chart of ms/slice per engine+precision, one panel per model (batch 1 solid, others hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results.rows.values() if r.ms_per_slice]
    if not rows:
        return None
    models = sorted({r.model for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = sorted((r for r in rows if r.model == model), key=lambda r: (r.engine, r.precision, r.batch))
        labels = [f"{r.engine}\n{r.precision} b{r.batch}" for r in mine]
        bars = ax.bar(
            range(len(mine)),
            [r.ms_per_slice for r in mine],
            color=[
                "#4c72b0" if r.precision == "fp32" else "#dd8452" if r.precision == "int8" else "#55a868" for r in mine
            ],
        )
        for b, r in zip(bars, mine):
            if r.batch > 1:
                b.set_hatch("//")
            if r.pct_ceiling:
                ax.annotate(
                    f"{r.pct_ceiling:.0f}%",
                    (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
        ax.set_xticks(range(len(mine)), labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("ms per slice (lower is better)")
        ax.set_title(f"{model} (label: % of ceiling)", fontsize=9)
    m = results.machine
    if m:
        fig.suptitle(
            f"{m.get('cpu_model', '?')}, {m.get('cpus')} cores, ISA {m.get('isa', '?')} "
            f"({', '.join(m.get('isa_flags', []))})",
            fontsize=8,
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_outputs(results: Results, folder: Path, *, full: bool) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / "summary.md"
    md.write_text(
        f"# limbseg-rt benchmark ({'full' if full else 'quick'} run)\n\n{results.markdown()}\n", encoding="utf-8"
    )
    js = folder / "summary.json"
    js.write_text(json.dumps(results.to_dict(), indent=2, default=str), encoding="utf-8")
    out = [md, js]
    png = chart(results, folder / "chart.png")
    if png is not None:
        out.append(png)
    return out
