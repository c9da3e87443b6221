"""``limbseg-rt evaluate PRED REF``: per-muscle DSC, RVE, HD, HD95, ASSD and volumes."""

from __future__ import annotations

import argparse
import math


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "evaluate",
        help="compare a predicted label map with a reference, per muscle",
        description=(
            "Compare a predicted label NIfTI with a reference label NIfTI on the same grid: "
            "Dice (DSC), relative volume error (RVE %), Hausdorff distance (HD), its 95th "
            "percentile (HD95) and average symmetric surface distance (ASSD) in mm, volumes in mL. "
            "Labels missing from one map get NaN distances and a flag; the mean row ignores NaN."
        ),
    )
    p.add_argument("pred", metavar="PRED.nii.gz", help="predicted label map")
    p.add_argument("ref", metavar="REF.nii.gz", help="reference (manual) label map on the same grid")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--csv", metavar="FILE", help="also write the results as CSV")
    p.add_argument(
        "--labels",
        metavar="TABLE.json",
        help="label table (JSON list of {index, name, code, colour}); default: the 37 muscles",
    )
    return p


def _fmt(x, digits: int) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def render_table(result) -> str:
    """The per-label table as text: one line per label and a mean line."""
    head = ("#", "code", "name", "DSC", "RVE %", "HD mm", "HD95 mm", "ASSD mm", "pred mL", "ref mL", "flag")
    lines = []
    for row in result.table_rows():
        lines.append(
            (
                "" if row["index"] is None else str(row["index"]),
                row["code"],
                row["name"],
                _fmt(row["dsc"], 3),
                _fmt(row["rve_percent"], 1),
                _fmt(row["hd_mm"], 1),
                _fmt(row["hd95_mm"], 1),
                _fmt(row["assd_mm"], 2),
                _fmt(row["vol_pred_ml"], 1),
                _fmt(row["vol_ref_ml"], 1),
                "" if row["flag"] == "ok" else row["flag"],
            )
        )
    mean_flag = lines[-1][-1]
    lines[-1] = lines[-1][:-1] + ("",)
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(head)]
    right = {0, 3, 4, 5, 6, 7, 8, 9}

    def fmt_line(cells):
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    out = [fmt_line(head), fmt_line(["-" * w for w in widths])]
    out += [fmt_line(r) for r in lines[:-1]]
    out.append(fmt_line(["-" * w for w in widths]))
    out.append(fmt_line(lines[-1]))
    out.append(f"mean = {mean_flag}")
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from limbseg_rt.runtime.errors import InputError
    from limbseg_rt.runtime.io.outputs import OutputSet
    from limbseg_rt.runtime.model.labels import LabelTable, default_label_table
    from limbseg_rt.runtime.report.metrics import evaluate_files

    if args.labels:
        try:
            table = LabelTable.from_json(Path(args.labels).read_text())
        except OSError as exc:
            raise InputError(f"cannot read the label table {args.labels}: {exc.strerror or exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"the label table {args.labels} is not a valid label table JSON: {exc}") from exc
    else:
        table = default_label_table()

    # Checked before the (long) evaluation: never one of the inputs, folders exist and are writable.
    with OutputSet(inputs=[args.pred, args.ref, args.labels]) as out:
        if args.csv:
            out.add("csv", args.csv, what="CSV file")
        if args.json:
            out.add("json", args.json, what="JSON file")
        out.check()
        result = evaluate_files(args.pred, args.ref, labels=table)
        if args.csv:
            out.write_text("csv", result.to_csv())
        if args.json:
            out.write_text("json", result.to_json() + "\n")
        out.commit()
    sp = " x ".join(f"{s:g}" for s in result.spacing)
    print(f"grid {' x '.join(str(n) for n in result.shape)} voxels of {sp} mm; distances in mm, volumes in mL")
    print(render_table(result))
    return 0
