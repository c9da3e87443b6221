"""``limbseg-rt train``: train UNet / Attention UNet / SC-UNet on NIfTI, PNG or phantom subjects.

Subjects: ``--data phantom`` generates training subjects from seeds ``1..--subjects`` and validation
subjects from seeds ``100..`` (seeds 200 and up are left for evaluation). A folder is either the
nnU-Net layout (``imagesTr/`` + ``labelsTr/``) or the authors' PNG layout; its subjects are taken in
sorted order, the last ``--val-subjects`` held out for validation.
"""

from __future__ import annotations

import argparse
import sys

PHANTOM_TRAIN_SEED0 = 1
PHANTOM_VAL_SEED0 = 100


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a model (needs the export extra: PyTorch)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--arch", required=True, choices=("unet", "attention-unet", "sc-unet"))
    p.add_argument("--data", required=True, help="'phantom' or a folder (nnU-Net NIfTI or <subject>_<n>.png layout)")
    p.add_argument("--out", required=True, help="checkpoint to write (authors' .pth.tar format)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument(
        "--features",
        type=int,
        nargs=4,
        default=[64, 128, 256, 512],
        metavar="F",
        help="encoder widths (default: the paper's 64 128 256 512)",
    )
    p.add_argument(
        "--subjects", type=int, default=None, help="training subjects (phantom default 6; folder: all but validation)"
    )
    p.add_argument("--val-subjects", type=int, default=1, help="held-out validation subjects (default 1; 0 = none)")
    p.add_argument(
        "--slices-per-subject",
        type=int,
        default=None,
        help="phantom: slices generated per subject (default 150); folder: evenly subsample to this many",
    )
    p.add_argument("--phantom-shape", type=int, nargs=2, default=[256, 256], metavar=("X", "Y"))
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation, shuffling and augmentation")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate at the start of the cosine schedule")
    p.add_argument(
        "--max-minutes", type=float, default=None, help="wall-time budget; stops in time to validate and save"
    )
    p.add_argument("--threads", type=int, default=2, help="PyTorch CPU threads (default 2)")
    p.add_argument("--channels-last", action="store_true", help="channels-last memory format (faster on some CPUs)")
    p.add_argument("--no-augment", action="store_true", help="disable rotation/flip augmentation")
    p.add_argument(
        "--rotation",
        type=float,
        default=35.0,
        metavar="DEG",
        help="largest random rotation in degrees (default 35, the paper's)",
    )
    p.add_argument(
        "--resume",
        default=None,
        metavar="CKPT",
        help="continue from this checkpoint (same --arch and --features); lr schedule restarts",
    )
    p.add_argument(
        "--init-from",
        default=None,
        metavar="CKPT",
        help="warm start from another model's checkpoint (e.g. a trained UNet for sc-unet or attention-unet)",
    )
    p.add_argument(
        "--position-lr-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="sc-unet: learning rate of the position layer as a multiple of --lr (default 1); "
        "e.g. 10 after --init-from a UNet, where that layer starts as the identity",
    )
    p.add_argument(
        "--loss",
        choices=("ce", "ce+dice"),
        default="ce",
        help="ce = cross-entropy (the paper); ce+dice adds a soft Dice term (faster on rare muscles)",
    )
    p.add_argument(
        "--crop",
        type=int,
        nargs=2,
        default=None,
        metavar=("H", "W"),
        help="train on random H x W windows of the slices (less compute per sample; not in the paper)",
    )
    p.add_argument(
        "--crop-foreground",
        type=float,
        default=0.67,
        metavar="P",
        help="with --crop: share of windows centred on a muscle pixel (default 0.67; 0 = anywhere)",
    )
    p.add_argument(
        "--class-balanced",
        type=float,
        default=0.0,
        metavar="F",
        help="share of slice draws balanced over muscles, so rare muscles (gemelli, piriformis) are "
        "seen as often as large ones (default 0 = uniform shuffling, as in the paper)",
    )
    p.add_argument(
        "--bf16",
        action="store_true",
        help="run the network's forward pass in bfloat16 autocast (weights, loss and validation stay "
        "float32); ~1.8x faster steps on CPUs with AVX512-BF16 or AMX",
    )
    p.add_argument(
        "--resampling",
        choices=("antialias", "exact"),
        default="antialias",
        help="how slices are resized to the model's input: antialias (default; no aliasing on fine "
        "grids) or exact (the paper's linear resize, as the authors' checkpoints expect); "
        "recorded in the checkpoint and the exported model",
    )
    p.add_argument(
        "--shift-augment",
        action="store_true",
        help="augment for acquisition shift: resolution (down/up-sampling with noise), contrast "
        "(gamma, window, bias field) and field of view (zoom 0.78-1.25); not in the paper",
    )
    p.add_argument(
        "--shift-prob",
        type=float,
        default=1.0,
        metavar="P",
        help="with --shift-augment: share of samples that get it (default 1 = every one); the others "
        "keep the plain training distribution, e.g. 0.5 when fine-tuning a trained model",
    )
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=0,
        metavar="N",
        help="ramp the learning rate linearly up to the schedule over the first N steps (default 0); "
        "Adam restarted without optimiser state otherwise takes full-size steps from the first batch",
    )
    p.add_argument(
        "--distill-weight",
        type=float,
        default=0.0,
        metavar="W",
        help="add W x KL(start || model) per pixel: the frozen starting weights (--resume/--init-from) "
        "predict each crop without the appearance changes and the model is kept close to them "
        "(default 0 = off); anchors fine-tuning to what the model already does",
    )
    p.add_argument(
        "--lr-by-weight-scale",
        action="store_true",
        help="give each convolution weight the learning rate x its RMS / the median RMS, so every "
        "layer changes by the same fraction per step (fine-tuning the recovered checkpoints, whose "
        "folded BatchNorm leaves layer scales 10x apart)",
    )
    p.add_argument(
        "--freeze-batchnorm",
        action="store_true",
        help="keep BatchNorm running statistics fixed (fine-tuning from a checkpoint, e.g. checkpoints/*.pth.tar)",
    )
    p.add_argument(
        "--val-every",
        type=int,
        default=1,
        metavar="N",
        help="validate (and keep the best checkpoint) every N epochs and at the end (default 1)",
    )
    return p


def _load_subjects(args, datasets):
    n_val = max(0, args.val_subjects)
    if args.data == "phantom":
        n_train = args.subjects or 6
        shape = tuple(args.phantom_shape)
        slices = args.slices_per_subject or 150
        make = lambda seed: datasets.phantom_subject(
            seed,
            slices=slices,
            shape=shape,  # noqa: E731
            resampling=args.resampling,
        )
        train = [make(PHANTOM_TRAIN_SEED0 + i) for i in range(n_train)]
        val = [make(PHANTOM_VAL_SEED0 + i) for i in range(n_val)]
        return train, val
    from pathlib import Path

    from limbseg_rt.runtime.errors import InputError

    root = Path(args.data)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (pass a data folder or 'phantom')")
    kw = {"max_slices": args.slices_per_subject, "resampling": args.resampling}
    if (root / "imagesTr").is_dir():
        items = [
            (case, lambda c=case, i=img, l=lab: datasets.nifti_subject(i, l, name=c, **kw))
            for case, img, lab in datasets.nnunet_cases(root)
        ]
    else:
        items = [
            (name, lambda n=name, f=files: datasets.png_subject(n, f, **kw))
            for name, files in datasets.png_subject_files(root).items()
        ]
    if len(items) <= n_val:
        raise InputError(f"{root}: {len(items)} subject(s) found; need more than --val-subjects {n_val}")
    train_items, val_items = items[: len(items) - n_val], items[len(items) - n_val :]
    if args.subjects:
        train_items = train_items[: args.subjects]
    return [load() for _, load in train_items], [load() for _, load in val_items]


def main(args) -> int:
    import os

    # Idle OpenMP threads sleep instead of spinning: on a busy shared CPU spinning made training
    # steps ~2.7x slower (measured). Set before torch loads its OpenMP runtime; users can override.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch  # noqa: F401
    except ImportError:
        from limbseg_rt.runtime.errors import MissingDependencyError

        raise MissingDependencyError(
            "limbseg-rt train needs the optional package 'torch' (PyTorch), which is not "
            'installed; install it with: pip install "limbseg-rt[export]"'
        ) from None
    from limbseg_rt.export import datasets
    from limbseg_rt.export.augment import NO_APPEARANCE, NO_AUGMENT, SHIFT_ZOOM, AppearanceSpec, AugmentSpec
    from limbseg_rt.export.train import TrainConfig, TrainSettingError, train

    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None

    # Settings first: a bad combination fails in a second, not after minutes of loading subjects.
    if args.subjects is not None and args.subjects < 1:
        raise TrainSettingError(f"--subjects must be 1 or more (got {args.subjects})")
    config = TrainConfig(
        arch=args.arch,
        features=tuple(args.features),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_minutes=args.max_minutes,
        threads=args.threads,
        channels_last=args.channels_last,
        loss=args.loss,
        class_balanced=args.class_balanced,
        crop_foreground=args.crop_foreground,
        bf16=args.bf16,
        val_every=args.val_every,
        position_lr_scale=args.position_lr_scale,
        resampling=args.resampling,
        appearance=AppearanceSpec() if args.shift_augment else NO_APPEARANCE,
        freeze_batchnorm=args.freeze_batchnorm,
        shift_prob=args.shift_prob,
        warmup_steps=args.warmup_steps,
        distill_weight=args.distill_weight,
        lr_by_weight_scale=args.lr_by_weight_scale,
        augment=NO_AUGMENT
        if args.no_augment
        else AugmentSpec(
            max_rotation_deg=args.rotation,
            crop_hw=tuple(args.crop) if args.crop else None,
            zoom=SHIFT_ZOOM if args.shift_augment else (1.0, 1.0),
        ),
    )
    print(f"loading subjects ({args.data}) ...", file=sys.stderr, flush=True)
    train_subjects, val_subjects = _load_subjects(args, datasets)
    train_data = datasets.SliceDataset(train_subjects)
    val_data = datasets.SliceDataset(val_subjects) if val_subjects else None
    print(
        f"train: {len(train_subjects)} subjects, {len(train_data)} slices; "
        f"validation: {len(val_subjects)} subjects, {len(val_data) if val_data else 0} slices",
        flush=True,
    )
    bar = None

    def on_step(epoch, step, steps, loss):
        nonlocal bar
        if tqdm is None:
            return
        if bar is None:
            # disable=None: no bar when stderr is not a terminal (e.g. a log file).
            bar = tqdm(total=steps, desc=f"epoch {epoch}", file=sys.stderr, leave=False, disable=None)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    def on_epoch(log):
        nonlocal bar
        if bar is not None:
            bar.close()
            bar = None
        val = f"  val_loss {log.val_loss:.4f}  val_dice {log.val_dice:.4f}" if log.val_loss is not None else ""
        print(
            f"epoch {log.epoch:3d}  steps {log.steps:4d}  train_loss {log.train_loss:.4f}{val}"
            f"  lr {log.lr:.2e}  {log.seconds:6.1f}s",
            flush=True,
        )

    result = train(
        config,
        train_data,
        val_data,
        args.out,
        on_step=on_step,
        on_epoch=on_epoch,
        resume=args.resume,
        init_from=args.init_from,
    )
    best = result.history[result.best_epoch - 1]
    why = " (stopped by --max-minutes)" if result.stopped_by_time else ""
    dice = f", val_dice {best.val_dice:.4f}" if best.val_dice is not None else ""
    print(
        f"done in {result.seconds / 60:.1f} min{why}; best epoch {result.best_epoch}{dice}; "
        f"checkpoint {result.checkpoint}",
        flush=True,
    )
    return 0
