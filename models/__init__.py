"""PyTorch networks of Henson et al. 2024 (training side): UNet, Attention UNet, SC-UNet.

Public API: ``create_model(name, *, classes=38, features=(64, 128, 256, 512), in_channels=1)``,
``MODELS`` (name -> class), ``load_checkpoint(model, path)``, ``read_checkpoint(path)``,
``save_checkpoint(model, path, *, optimizer=None, extra=None)``. Importing this package imports
torch but constructs nothing.
"""

from limbseg_rt.models.attention_unet import AttentionGate, AttentionUNet
from limbseg_rt.models.blocks import DEFAULT_CLASSES, DEFAULT_FEATURES, DoubleConv
from limbseg_rt.models.checkpoint import check_state_dict, load_checkpoint, read_checkpoint, save_checkpoint
from limbseg_rt.models.registry import MODELS, create_model
from limbseg_rt.models.sc_unet import SCUNet, position_onehot_torch
from limbseg_rt.models.unet import UNet

__all__ = [
    "AttentionGate",
    "AttentionUNet",
    "DEFAULT_CLASSES",
    "DEFAULT_FEATURES",
    "DoubleConv",
    "MODELS",
    "SCUNet",
    "UNet",
    "check_state_dict",
    "create_model",
    "load_checkpoint",
    "position_onehot_torch",
    "read_checkpoint",
    "save_checkpoint",
]
