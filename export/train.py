"""Training loop: cross-entropy + Adam on in-memory slices, paper augmentation, best checkpoint.

``train(config, train_data, val_data, out)`` runs epochs of shuffled mini-batches, validates after
each epoch (loss and 3D mean per-muscle Dice of each held-out subject, averaged), and writes the best
model (highest validation Dice; lowest training loss without validation) in the authors' checkpoint
format via ``models.save_checkpoint``. ``config.max_minutes`` bounds the wall time: training stops
early enough to validate and save. The learning rate follows a cosine from ``lr`` to ~0 over the
run, measured by steps or by elapsed time, whichever is further along, so a time-bounded run still
anneals. Library code never prints: progress goes to the ``on_step``/``on_epoch`` callbacks.

Fine-tuning options (``docs/acquisition-shift.md``): ``shift_prob`` gives only that share of the
samples the acquisition-shift augmentation; ``warmup_steps`` ramps the learning rate linearly from
``lr / warmup_steps`` to the schedule's value (Adam without saved state otherwise takes full-size
steps from the first batch); ``distill_weight`` adds ``w * KL(teacher || student)`` per pixel, the
teacher being a frozen copy of the starting weights fed the same crop without the appearance
changes, which anchors the model to what it computed before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from limbseg_rt.export.augment import NO_APPEARANCE, AppearanceSpec, AugmentSpec, augment_appearance, augment_batch
from limbseg_rt.export.datasets import SliceDataset
from limbseg_rt.runtime.errors import EXIT_USAGE, LimbsegError
from limbseg_rt.runtime.inference.preprocess import resize_bilinear
from limbseg_rt.runtime.model.input_spec import MODEL_INPUT_HW, NormalisationSpec
from limbseg_rt.runtime.model.labels import default_label_table
from limbseg_rt.runtime.report.metrics import LabelCounts, confusion_matrix, label_counts


class TrainSettingError(LimbsegError, ValueError):
    """Training settings that cannot work together; the message names the ``limbseg-rt train`` option."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters. ``features``: channel widths of the four encoder levels."""

    arch: str = "unet"
    features: tuple[int, ...] = (64, 128, 256, 512)
    classes: int = 38
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    max_minutes: float | None = None
    augment: AugmentSpec = AugmentSpec()
    threads: int = 2
    channels_last: bool = False
    min_lr_fraction: float = 0.02
    loss: str = "ce"  # "ce" (the paper) or "ce+dice" (adds a soft Dice term; rare muscles learn sooner)
    class_balanced: float = 0.0  # share of slice draws balanced over muscles (0 = the paper's shuffling)
    crop_foreground: float = 0.67  # with crops: share of windows centred on a muscle pixel
    bf16: bool = False  # forward pass under bfloat16 autocast; master weights, loss and validation in float32
    val_every: int = 1  # validate every N epochs (and after the last one)
    position_lr_scale: float = 1.0  # SC-UNet: the position layer's learning rate, as a multiple of lr
    resampling: str = "exact"  # how the training slices were resized (recorded in the checkpoint, then the model)
    appearance: AppearanceSpec = NO_APPEARANCE  # acquisition-shift intensity/resolution changes (augment.py)
    freeze_batchnorm: bool = False  # BatchNorm layers keep their running statistics (fine-tuning)
    shift_prob: float = 1.0  # share of samples given the acquisition-shift augmentation (appearance + zoom)
    warmup_steps: int = 0  # linear learning-rate warm-up over this many steps (0 = none)
    distill_weight: float = 0.0  # weight of the KL term towards the frozen starting model (0 = none)
    lr_by_weight_scale: bool = False  # each conv weight's lr x its RMS / the median conv-weight RMS

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise TrainSettingError(
                f"--epochs and --batch-size must be 1 or more (got {self.epochs}, {self.batch_size})"
            )
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise TrainSettingError(f"--max-minutes must be above 0 (got {self.max_minutes:g})")
        if self.loss not in ("ce", "ce+dice"):
            raise TrainSettingError(f"unknown --loss {self.loss!r}; use 'ce' or 'ce+dice'")
        if not (0.0 <= self.class_balanced <= 1.0 and 0.0 <= self.crop_foreground <= 1.0):
            raise TrainSettingError("--class-balanced and --crop-foreground must lie in [0, 1]")
        if not 0.0 <= self.shift_prob <= 1.0:
            raise TrainSettingError(f"--shift-prob must lie in [0, 1] (got {self.shift_prob:g})")
        if self.shift_prob < 1.0 and self.appearance == NO_APPEARANCE and self.augment.zoom == (1.0, 1.0):
            raise TrainSettingError("--shift-prob needs --shift-augment (there is no shift augmentation to dose)")
        if self.warmup_steps < 0:
            raise TrainSettingError(f"--warmup-steps must be 0 or more (got {self.warmup_steps})")
        if not self.distill_weight >= 0.0:
            raise TrainSettingError(f"--distill-weight must be 0 or more (got {self.distill_weight:g})")
        if self.val_every < 1:
            raise TrainSettingError(f"--val-every must be 1 or more (got {self.val_every})")
        if not self.position_lr_scale > 0:
            raise TrainSettingError(f"--position-lr-scale must be above 0 (got {self.position_lr_scale:g})")
        if self.lr_by_weight_scale and self.position_lr_scale != 1.0:
            raise TrainSettingError("--lr-by-weight-scale and --position-lr-scale cannot be combined")
        if self.position_lr_scale != 1.0 and self.arch != "sc-unet":
            raise TrainSettingError(
                f"--position-lr-scale is for sc-unet's position layer; {self.arch} has none (drop the option)"
            )
        if self.channels_last and self.arch == "attention-unet":
            # torch 2.13 CPU segfaults in the backward pass of this model in channels-last (measured).
            raise TrainSettingError(
                "--channels-last crashes PyTorch's backward pass for attention-unet; drop the option"
            )


@dataclass(frozen=True)
class EpochLog:
    """One epoch. Losses are mean cross-entropy per pixel; ``val_dice`` is the mean over validation
    subjects of the 3D Dice averaged over muscles present in truth or prediction (None without
    validation data). ``steps`` counts optimiser steps in this epoch (fewer if time ran out)."""

    epoch: int
    steps: int
    train_loss: float
    val_loss: float | None
    val_dice: float | None
    lr: float
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    history: tuple[EpochLog, ...]
    best_epoch: int
    checkpoint: Path
    stopped_by_time: bool
    seconds: float


def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed blocks instead of returning them to the kernel.

    Every training step allocates and frees the same activation buffers (tens of MB). With glibc's
    defaults those big blocks are ``mmap``ed and ``munmap``ed each time, so every step page-faults
    and zeroes them afresh: one 18-minute run took 122 million minor faults and a fifth of its CPU
    time in the kernel. Raising the mmap and trim thresholds keeps the buffers in the heap; a demo
    UNet step went from 233 to 195 ms (measured). Returns False where there is no glibc.
    """
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc <malloc.h>
    ok = mallopt(m_mmap_threshold, 1 << 30) == 1
    return bool(ok and mallopt(m_trim_threshold, (1 << 31) - 1) == 1)


def is_position_model(arch: str) -> bool:
    return arch == "sc-unet"


def forward(model: torch.nn.Module, arch: str, images: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits ``[N, C, H, W]``; SC-UNet also takes the slice positions ``[N]``."""
    return model(images, positions) if is_position_model(arch) else model(images)


def confusion(pred: torch.Tensor, truth: torch.Tensor, classes: int) -> torch.Tensor:
    """``[classes, classes]`` int64 counts, rows = truth, columns = prediction (the runtime's
    ``confusion_matrix`` on the tensors' numpy views)."""
    return torch.from_numpy(confusion_matrix(pred.cpu().numpy(), truth.cpu().numpy(), classes))


def mean_muscle_dice(conf: np.ndarray) -> float:
    """Mean Dice over the muscles (classes 1..C-1) that occur in truth or prediction."""
    return LabelCounts.from_confusion(conf).mean_dice()[0]


@torch.no_grad()
def validate(
    model, arch: str, data: SliceDataset, *, classes: int, batch_size: int = 8, channels_last: bool = False
) -> tuple[float, float]:
    """``(mean cross-entropy, mean over subjects of the 3D mean muscle Dice)`` at the model's input size."""
    model.eval()
    loss_sum, n_pix, dices = 0.0, 0, []
    for start, end in data.subject_ranges:
        conf = torch.zeros(classes, classes, dtype=torch.int64)
        for b in range(start, end, batch_size):
            img, lab, pos = data.batch(np.arange(b, min(b + batch_size, end)))
            if channels_last:
                img = img.contiguous(memory_format=torch.channels_last)
            logits = forward(model, arch, img, pos)
            loss_sum += float(F.cross_entropy(logits, lab, reduction="sum"))
            n_pix += lab.numel()
            conf += confusion(logits.argmax(1), lab, classes)
        dices.append(mean_muscle_dice(conf.numpy()))
    return loss_sum / max(n_pix, 1), float(np.mean(dices))


def init_for_training(model: torch.nn.Module, class_freq: np.ndarray | None) -> None:
    """Start-of-training initialisation that speeds convergence without changing the architecture.

    The final 1x1 convolution's bias is set to the log class frequencies (background ~90 % of pixels
    would otherwise take hundreds of Adam steps to learn). SC-UNet's position layer starts as the
    identity scaling (weight 0, bias 1): the network begins as a UNet and learns per-position weights,
    instead of starting with logits multiplied by random +-0.1 factors.
    """
    final = getattr(model, "final_conv", None)
    with torch.no_grad():
        if class_freq is not None and isinstance(final, torch.nn.Conv2d) and final.bias is not None:
            freq = np.asarray(class_freq, dtype=np.float64)
            logp = np.log(np.maximum(freq / max(freq.sum(), 1.0), 1e-6))
            final.bias.copy_(torch.from_numpy(logp - logp.mean()).to(final.bias.dtype))
        lin = getattr(model, "spatiallinear", None)
        if isinstance(lin, torch.nn.Linear):
            lin.weight.zero_()
            lin.bias.fill_(1.0)


def _unet_key_to_attention(key: str) -> str:
    # UNet decoder ``ups.{2i}`` (ConvTranspose2d) / ``ups.{2i+1}`` (DoubleConv) play the roles of the
    # Attention UNet's ``up_samples.{i}`` / ``up_convs.{i}``; encoder and final conv share names.
    parts = key.split(".")
    if parts[0] == "ups" and len(parts) > 2:
        i = int(parts[1])
        return ".".join(["up_samples" if i % 2 == 0 else "up_convs", str(i // 2), *parts[2:]])
    return key


def warm_start(model: torch.nn.Module, path: str | Path) -> int:
    """Copy every tensor of checkpoint ``path`` whose name (UNet names mapped to Attention UNet names)
    and shape match ``model``; the rest keeps its initialisation. Returns how many tensors were copied.

    Lets SC-UNet start from a trained UNet (identical keys plus its position layer, which
    ``init_for_training`` sets to the identity scaling) and the Attention UNet reuse a UNet's encoder,
    decoder convolutions and classifier. Attention gates the checkpoint has no weights for start open
    (``AttentionGate.open_``), so the warm-started Attention UNet computes exactly the UNet it came
    from and the gates learn from there.
    """
    from limbseg_rt.models import read_checkpoint
    from limbseg_rt.runtime.errors import ModelError

    source = read_checkpoint(path)["state_dict"]
    own = model.state_dict()
    picked = {}
    for key, value in source.items():
        for name in (key, _unet_key_to_attention(key)):
            if name in own and tuple(own[name].shape) == tuple(value.shape):
                picked[name] = value
                break
    if not picked:
        raise ModelError(f"{Path(path).name}: no tensor fits this model (different widths?)")
    model.load_state_dict(picked, strict=False)
    for i, gate in enumerate(getattr(model, "att_block", ())):
        if not any(name.startswith(f"att_block.{i}.") for name in picked):
            gate.open_()
    return len(picked)


def loss_terms(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cross_entropy, soft_dice_loss)`` of ``logits`` ``[N, C, H, W]`` against int64 ``labels``
    ``[N, H, W]``, from one log-softmax.

    The Dice term is 1 - mean soft Dice over the muscle classes present in the batch (batch Dice,
    nnU-Net style); classes absent from the labels are left out so an empty class does not reward
    predicting nothing. The intersection gathers each pixel's true-class probability and sums it
    per class (``index_add``) instead of building a ``[N, C, H, W]`` one-hot: same value, about a
    quarter less time per training step for the small demo networks (measured).
    """
    classes = logits.shape[1]
    logp = logits.float().log_softmax(dim=1)
    lab = labels.reshape(labels.shape[0], 1, *labels.shape[1:])
    logp_true = logp.gather(1, lab)
    ce = -logp_true.mean()
    probs = logp.exp()
    flat = labels.reshape(-1)
    inter = torch.zeros(classes, dtype=probs.dtype).index_add(0, flat, logp_true.exp().reshape(-1))
    count = torch.bincount(flat, minlength=classes)[:classes].to(probs.dtype)
    dice = (2 * inter + 1.0) / (probs.sum(dim=(0, 2, 3)) + count + 1.0)
    present = count > 0
    present[0] = False
    if not bool(present.any()):
        return ce, logits.sum() * 0.0
    return ce, 1.0 - dice[present].mean()


def soft_dice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The Dice term of ``loss_terms``."""
    return loss_terms(logits, labels)[1]


def slice_sampling_weights(labels: np.ndarray, classes: int, class_balanced: float) -> np.ndarray:
    """Probability of drawing each slice, float64 ``[n]`` summing to 1.

    A mixture: ``1 - class_balanced`` of the draws are uniform over slices (the paper's shuffling);
    ``class_balanced`` of them first pick a muscle uniformly and then a slice that contains it. A
    muscle present in 4 slices of 900 (the gemelli in the phantom) is then seen as often as the vastus
    lateralis; with uniform draws the network hardly ever meets it. Slices with no muscle are only
    reached through the uniform part.
    """
    n = labels.shape[0]
    if not 0.0 <= class_balanced <= 1.0:
        raise ValueError("class_balanced must lie in [0, 1]")
    flat = labels.reshape(n, -1)
    present = np.zeros((n, classes), dtype=bool)
    for i in range(n):
        present[i] = np.bincount(flat[i], minlength=classes)[:classes] > 0
    present[:, 0] = False
    per_class = present.sum(axis=0)
    uniform = np.full(n, 1.0 / n)
    if class_balanced == 0.0 or not per_class.any():
        return uniform
    muscles = per_class > 0
    balanced = (present[:, muscles] / per_class[muscles]).sum(axis=1) / muscles.sum()
    return (1.0 - class_balanced) * uniform + class_balanced * balanced


def foreground_centres(labels: np.ndarray, probability: float, rng: np.random.Generator) -> np.ndarray:
    """Crop centres ``[n, 2]`` float32 (row, col) for a batch of label slices ``[n, h, w]``.

    With ``probability`` a sample's window is centred on a random pixel of one of its muscles (the
    muscle picked uniformly among those present); otherwise, or when the slice holds no muscle, the
    row is NaN and the crop stays at a random place.
    """
    out = np.full((labels.shape[0], 2), np.nan, dtype=np.float32)
    for i, lab in enumerate(labels):
        if rng.random() >= probability:
            continue
        muscles = np.flatnonzero(np.bincount(lab.ravel())[1:]) + 1
        if muscles.size == 0:
            continue
        rows, cols = np.nonzero(lab == rng.choice(muscles))
        k = rng.integers(rows.size)
        out[i] = rows[k], cols[k]
    return out


def _param_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict]:
    """Adam parameter groups, each with the ``lr_scale`` the schedule multiplies its learning rate by.

    One group, unless ``config.position_lr_scale`` gives SC-UNet's position layer (``spatiallinear``)
    its own: warm-started from a UNet, that layer starts at the identity scaling and at the UNet's
    learning rate barely moves from it in a short run.
    """
    if config.lr_by_weight_scale:
        return weight_scaled_groups(model)
    if config.position_lr_scale == 1.0:
        return [{"params": list(model.parameters()), "lr_scale": 1.0}]
    named = list(model.named_parameters())
    position = [p for n, p in named if n.startswith("spatiallinear.")]
    rest = [p for n, p in named if not n.startswith("spatiallinear.")]
    return [{"params": rest, "lr_scale": 1.0}, {"params": position, "lr_scale": config.position_lr_scale}]


def weight_scaled_groups(model: torch.nn.Module) -> list[dict]:
    """Adam groups for ``--lr-by-weight-scale``: every convolution weight (``ndim >= 2``) its own group
    with ``lr_scale = RMS(weight) / median RMS over those weights``; biases and BatchNorm parameters
    one group at scale 1.

    Adam moves every weight by about the learning rate per step, whatever its size. The recovered
    checkpoints carry BatchNorm folded into the convolutions, so their layers' weight scales differ
    by more than ten times (demo UNet: RMS 3e-3 in the deepest decoder level, 5e-2 in others); the
    same rate then changes the small layers by several percent while the others move a fraction of
    that (measured: docs/acquisition-shift.md). Scaling by the RMS makes the relative change per step
    the same in every layer.
    """
    weights = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    with torch.no_grad():
        rms = [float(p.detach().float().pow(2).mean().sqrt()) for p in weights]
    ref = float(np.median(rms)) if rms else 1.0
    groups = [{"params": [p], "lr_scale": (r / ref) if ref > 0 and r > 0 else 1.0} for p, r in zip(weights, rms)]
    return groups + ([{"params": rest, "lr_scale": 1.0}] if rest else [])


def _lr_at(config: TrainConfig, progress: float, step: int = 0) -> float:
    """Learning rate of optimiser step ``step`` (0-based) at ``progress`` (0..1) through the run:
    the cosine, times ``(step + 1) / warmup_steps`` during the warm-up."""
    frac = config.min_lr_fraction + (1 - config.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if step < config.warmup_steps:
        frac *= (step + 1) / config.warmup_steps
    return config.lr * frac


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of ``KL(teacher || student)`` of the class distributions (float32; 0 when the
    two agree). ``[N, C, H, W]`` logits; the teacher's carry no gradient."""
    logp_s = student_logits.float().log_softmax(dim=1)
    logp_t = teacher_logits.detach().float().log_softmax(dim=1)
    return (logp_t.exp() * (logp_t - logp_s)).sum(dim=1).mean()


def checkpoint_extra(config: TrainConfig, *, epoch: int, val_loss, val_dice, train_loss) -> dict:
    """The keys we add to the authors' ``{"state_dict", "optimizer"}`` checkpoint."""
    return {
        "arch": config.arch,
        "features": list(config.features),
        "classes": config.classes,
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "val_dice": val_dice,
        "label_table": default_label_table().to_json(),
        "input_hw": list(MODEL_INPUT_HW),
        "normalisation": NormalisationSpec().to_dict(),
        "resampling": config.resampling,
        "train_config": {
            k: (list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(config).items()
            if k not in ("augment", "appearance")
        }
        | {
            name: {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(getattr(config, name)).items()}
            for name in ("augment", "appearance")
        },
    }


def train(
    config: TrainConfig,
    train_data: SliceDataset,
    val_data: SliceDataset | None,
    out: str | Path,
    *,
    on_step: Callable[[int, int, int, float], None] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    resume: str | Path | None = None,
    init_from: str | Path | None = None,
) -> TrainResult:
    """Train ``config.arch`` and write the best checkpoint to ``out``.

    ``on_step(epoch, step, steps_per_epoch, loss)`` after every optimiser step; ``on_epoch(EpochLog)``
    after every epoch. Input size is that of ``train_data`` (``[1, h, w]``, h and w multiples of 16).
    ``resume``: a checkpoint of the same architecture/features to continue from (weights and, when
    saved, the Adam state); the schedule restarts at ``config.lr``. ``init_from``: warm start from
    another architecture's checkpoint (see ``warm_start``); fresh optimiser.
    """
    from limbseg_rt.models import create_model, load_checkpoint, save_checkpoint

    torch.set_num_threads(max(1, int(config.threads)))
    keep_freed_memory()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    model = create_model(config.arch, classes=config.classes, features=tuple(config.features), in_channels=1)
    resumed = load_checkpoint(model, resume) if resume is not None else None
    if resumed is None:
        init_for_training(model, np.bincount(train_data.labels.ravel(), minlength=config.classes)[: config.classes])
        if init_from is not None:
            warm_start(model, init_from)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    teacher = None
    if config.distill_weight > 0:
        import copy

        teacher = copy.deepcopy(model).eval()  # the starting weights, frozen
        for p in teacher.parameters():
            p.requires_grad_(False)
    groups = _param_groups(model, config)
    opt = torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    if resumed is not None and resumed.get("optimizer"):
        saved_groups = len(resumed["optimizer"].get("param_groups", ()))
        if saved_groups != len(opt.param_groups):
            raise TrainSettingError(
                f"{Path(resume).name}: its optimiser state has {saved_groups} parameter group(s), "
                f"this run {len(opt.param_groups)} (--position-lr-scale changed); "
                "warm-start from it instead (--init-from)"
            )
        opt.load_state_dict(resumed["optimizer"])  # replaces the groups' settings with the saved ones
        for group, wanted in zip(opt.param_groups, groups):
            group["lr_scale"] = wanted["lr_scale"]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    n = len(train_data)
    bs = min(config.batch_size, n)  # SliceDataset holds at least one slice
    steps_per_epoch = n // bs  # drop the ragged tail: every step sees a full batch
    total_steps = steps_per_epoch * config.epochs
    budget = None if config.max_minutes is None else 60.0 * config.max_minutes
    t0 = clock()
    history: list[EpochLog] = []
    best_score, best_epoch, step, stopped, val_seconds = -math.inf, 0, 0, False, 0.0

    draw = slice_sampling_weights(train_data.labels, config.classes, config.class_balanced)
    for epoch in range(1, config.epochs + 1):
        t_epoch = clock()
        model.train()
        if config.freeze_batchnorm:
            # Fine-tuning a model whose BatchNorm layers carry its exported behaviour (recovered
            # checkpoints: identity + bias): batch statistics would replace them at the first step.
            for mod in model.modules():
                if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm):
                    mod.eval()
        order = rng.permutation(n) if config.class_balanced == 0.0 else rng.choice(n, size=n, p=draw)
        losses = []
        for k in range(steps_per_epoch):
            elapsed = clock() - t0
            if budget is not None:
                # Keep room for one validation + save (measured last epoch; guessed before that).
                step_time = (elapsed / step) if step else 0.0
                reserve = 1.2 * (val_seconds or step_time * (len(val_data) / bs if val_data else 1)) + 5.0
                if losses and elapsed + step_time + reserve > budget:
                    stopped = True
                    break
            progress = step / total_steps if total_steps else 1.0
            if budget is not None:
                progress = max(progress, elapsed / budget)
            lr = _lr_at(config, progress, step)
            for group in opt.param_groups:
                group["lr"] = lr * group["lr_scale"]
            index = order[k * bs : (k + 1) * bs]
            img, lab, pos = train_data.batch(index)
            centres = None
            if config.augment.crop_hw is not None and config.crop_foreground > 0:
                centres = torch.from_numpy(foreground_centres(train_data.labels[index], config.crop_foreground, rng))
            # Drawn only below 1, so runs without --shift-prob keep their random stream.
            chosen = torch.rand(len(index), generator=gen) < config.shift_prob if config.shift_prob < 1.0 else None
            img, lab = augment_batch(img, lab, config.augment, gen, centres, chosen)
            clean = img
            if config.appearance != NO_APPEARANCE:
                img = augment_appearance(img, config.appearance, gen, chosen)
            if config.channels_last:
                img = img.contiguous(memory_format=torch.channels_last)
                clean = clean.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                logits = forward(model, config.arch, img, pos)
                if teacher is not None:
                    with torch.no_grad():
                        teacher_logits = forward(teacher, config.arch, clean, pos)
            if config.loss == "ce+dice":
                ce, dice_loss = loss_terms(logits, lab)
                loss = ce + dice_loss
            else:
                loss = F.cross_entropy(logits, lab)
            if teacher is not None:
                loss = loss + config.distill_weight * distill_loss(logits, teacher_logits)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            if on_step:
                on_step(epoch, k + 1, steps_per_epoch, losses[-1])
        if not losses:
            break
        train_loss = float(np.mean(losses))
        val_loss = val_dice = None
        last = stopped or epoch == config.epochs
        if val_data is not None and (epoch % config.val_every == 0 or last):
            t_val = clock()
            val_loss, val_dice = validate(
                model, config.arch, val_data, classes=config.classes, batch_size=bs, channels_last=config.channels_last
            )
            val_seconds = clock() - t_val
        if val_data is not None and val_dice is None:
            score = -math.inf  # not validated this epoch: keep the best validated checkpoint
        else:
            score = val_dice if val_dice is not None and math.isfinite(val_dice) else -train_loss
        if score > best_score:
            best_score, best_epoch = score, epoch
            save_checkpoint(
                model,
                out,
                optimizer=opt,
                extra=checkpoint_extra(
                    config, epoch=epoch, val_loss=val_loss, val_dice=val_dice, train_loss=train_loss
                ),
            )
        log = EpochLog(epoch, len(losses), train_loss, val_loss, val_dice, lr, clock() - t_epoch)
        history.append(log)
        if on_epoch:
            on_epoch(log)
        if stopped:
            break
    return TrainResult(tuple(history), best_epoch, out, stopped, clock() - t0)


# --- evaluation at the native grid ---------------------------------------------------------------


@torch.no_grad()
def predict_volume(
    model,
    arch: str,
    image: np.ndarray,
    *,
    positions: np.ndarray | None = None,
    input_hw: tuple[int, int] = MODEL_INPUT_HW,
    spec: NormalisationSpec = NormalisationSpec(),
    batch_size: int = 8,
    resampling: str = "exact",
) -> np.ndarray:
    """Labels uint8 ``[X, Y, Z]`` for a RAS+ canonical volume ``[X, Y, Z]`` (z = 0 most inferior).

    Slices are preprocessed as at runtime, logits are resized bilinearly back to the native
    ``[X, Y]`` grid (``runtime.preprocess.resize_bilinear``) and argmax-ed there. ``positions``
    (float32 ``[Z]``) default to ``slice_positions(Z, proximal_first=False)``.
    """
    from limbseg_rt.runtime.inference.preprocess import intensity_window, preprocess_slices
    from limbseg_rt.runtime.model.position import slice_positions

    model.eval()
    x, y, z = image.shape
    lo, hi = intensity_window(image, spec)
    if positions is None:
        positions = slice_positions(z, proximal_first=False)
    out = np.zeros((x, y, z), dtype=np.uint8)
    for b in range(0, z, batch_size):
        ks = np.arange(b, min(b + batch_size, z))
        inp = preprocess_slices(np.moveaxis(image[:, :, ks], 2, 0), lo, hi, input_hw, resampling)
        logits = forward(model, arch, torch.from_numpy(inp), torch.from_numpy(np.asarray(positions[ks], np.float32)))
        native = resize_bilinear(logits.numpy(), (x, y))
        out[:, :, ks] = np.moveaxis(native.argmax(axis=1).astype(np.uint8), 0, 2)
    return out


def volume_dice(pred: np.ndarray, truth: np.ndarray, classes: int = 38) -> np.ndarray:
    """3D Dice per class (float64 ``[classes]``, NaN where absent from both)."""
    return label_counts(pred, truth, classes).dice()
