"""``limbseg-rt tune``: measure which precision ``--precision auto`` should run on this machine."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "tune",
        help="measure the fastest precision per bundled model and CPU provider for --precision auto",
        description="Segment a phantom scan with every precision each bundled model can run on the CPU "
        "providers here (fp32, int8; bf16 on OpenVINO with a bf16-capable CPU), compare the labels with "
        "fp32's, and save the fastest one that agrees (mean Dice >= 0.97) as --precision auto's choice.",
    )
    p.add_argument(
        "--model",
        action="append",
        choices=("unet", "attention-unet", "sc-unet"),
        help="bundled model to tune (repeatable; default: all)",
    )
    p.add_argument(
        "--provider",
        action="append",
        choices=("cpu", "openvino"),
        help="provider to tune (repeatable; default: the CPU providers that run here)",
    )
    p.add_argument("--slices", type=int, default=24, help="slices of the phantom scan timed (default: 24)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per candidate, best kept (default: 3)")
    p.add_argument("--threads", type=int, default=None, help="engine threads (default: the usable cores)")
    p.add_argument("--dry-run", action="store_true", help="measure and print, save nothing")
    return p


def main(args) -> int:
    from limbseg_rt.runtime.engine.cpu import detect
    from limbseg_rt.runtime.engine.precision_profile import profile_path
    from limbseg_rt.runtime.errors import InputError
    from limbseg_rt.runtime.model.metadata import ARCHITECTURES
    from limbseg_rt.runtime.tuning import tune

    if args.slices < 2 or args.repeats < 1:
        raise InputError("--slices must be at least 2 and --repeats at least 1")
    print(f"CPU: {detect().describe()}")
    results = tune(
        tuple(args.model or ARCHITECTURES),
        args.provider,
        slices=args.slices,
        repeats=args.repeats,
        threads=args.threads,
        progress=print,
        save=not args.dry_run,
    )
    for r in results:
        if r.skipped:
            print(f"{r.provider:<9} {r.arch:<15} auto -> {r.chosen or '-'} ({r.skipped})")
        else:
            print(f"{r.provider:<9} {r.arch:<15} auto -> {r.chosen}")
    saved = [r for r in results if r.skipped is None]
    if saved and not args.dry_run:
        print(f"saved to {profile_path()}")
    return 0
