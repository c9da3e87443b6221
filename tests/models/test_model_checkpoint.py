"""Checkpoints: the authors' key layout loads; bad files give one clear ModelError; no code runs."""

from __future__ import annotations

import pickle

import pytest
import torch

from limbseg_rt.models import create_model, load_checkpoint, read_checkpoint, save_checkpoint
from limbseg_rt.runtime.errors import ModelError

TINY = (4, 8, 16, 32)
C = 38


def _double_conv(prefix: str, cin: int, cout: int) -> dict:
    sd = {
        f"{prefix}.conv.0.weight": torch.randn(cout, cin, 3, 3),
        f"{prefix}.conv.3.weight": torch.randn(cout, cout, 3, 3),
    }
    for bn in (1, 4):
        sd.update(_bn(f"{prefix}.conv.{bn}", cout))
    return sd


def _bn(prefix: str, c: int) -> dict:
    return {
        f"{prefix}.weight": torch.rand(c) + 0.5,
        f"{prefix}.bias": torch.randn(c),
        f"{prefix}.running_mean": torch.randn(c),
        f"{prefix}.running_var": torch.rand(c) + 0.5,
        f"{prefix}.num_batches_tracked": torch.tensor(7),
    }


def _encoder(feats) -> dict:
    sd, cin = {}, 1
    for i, f in enumerate(feats):
        sd.update(_double_conv(f"downs.{i}", cin, f))
        cin = f
    sd.update(_double_conv("deepest_conv", feats[-1], 2 * feats[-1]))
    sd["final_conv.weight"], sd["final_conv.bias"] = torch.randn(C, feats[0], 1, 1), torch.randn(C)
    return sd


def authors_unet_state(feats=TINY, *, sc=False) -> dict:
    """A state dict written from the paper's key list (not from our model)."""
    sd = _encoder(feats)
    for k, f in enumerate(reversed(feats)):
        sd[f"ups.{2 * k}.weight"], sd[f"ups.{2 * k}.bias"] = torch.randn(2 * f, f, 2, 2), torch.randn(f)
        sd.update(_double_conv(f"ups.{2 * k + 1}", 2 * f, f))
    if sc:
        sd["spatiallinear.weight"], sd["spatiallinear.bias"] = torch.randn(C, 100), torch.randn(C)
    return sd


def authors_attention_state(feats=TINY) -> dict:
    sd = _encoder(feats)
    for i, f in enumerate(reversed(feats)):
        a = f"att_block.{i}"
        sd[f"{a}.W_g.0.weight"], sd[f"{a}.W_g.0.bias"] = torch.randn(f, 2 * f, 1, 1), torch.randn(f)
        sd.update(_bn(f"{a}.W_g.1", f))
        sd[f"{a}.W_x.0.weight"], sd[f"{a}.W_x.0.bias"] = torch.randn(f, f, 1, 1), torch.randn(f)
        sd.update(_bn(f"{a}.W_x.1", f))
        sd[f"{a}.psi.0.weight"], sd[f"{a}.psi.0.bias"] = torch.randn(1, f, 1, 1), torch.randn(1)
        sd.update(_bn(f"{a}.psi.1", 1))
        sd[f"{a}.psi.3.weight"], sd[f"{a}.psi.3.bias"] = torch.randn(1, 1, 2, 2), torch.randn(1)
        sd[f"up_samples.{i}.weight"], sd[f"up_samples.{i}.bias"] = torch.randn(2 * f, f, 2, 2), torch.randn(f)
        sd.update(_double_conv(f"up_convs.{i}", 2 * f, f))
    return sd


AUTHORS = {
    "unet": lambda: authors_unet_state(),
    "attention-unet": lambda: authors_attention_state(),
    "sc-unet": lambda: authors_unet_state(sc=True),
}


@pytest.mark.parametrize("name", list(AUTHORS))
def test_authors_layout_loads_exactly(name, tmp_path):
    state = AUTHORS[name]()
    path = tmp_path / "model.pth.tar"
    torch.save({"state_dict": state, "optimizer": {"state": {}, "param_groups": []}}, path)
    model = create_model(name, features=TINY)
    assert set(model.state_dict()) == set(state)
    ckpt = load_checkpoint(model, path)
    assert "optimizer" in ckpt
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_data_parallel_prefix_and_bare_state_dict(tmp_path):
    state = authors_unet_state()
    path = tmp_path / "dp.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    model = create_model("unet", features=TINY)
    load_checkpoint(model, path)
    assert torch.equal(model.final_conv.weight, state["final_conv.weight"])
    bare = tmp_path / "bare.pt"
    torch.save(state, bare)
    load_checkpoint(create_model("unet", features=TINY), bare)


def test_save_load_round_trip_with_extras(tmp_path):
    torch.manual_seed(3)
    model = create_model("sc-unet", features=TINY)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    path = save_checkpoint(
        model, tmp_path / "m.pth.tar", optimizer=opt, extra={"arch": "sc-unet", "features": TINY, "epoch": 3}
    )
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"state_dict", "optimizer", "arch", "features", "epoch"}
    other = create_model("sc-unet", features=TINY)
    ckpt = load_checkpoint(other, path)
    assert ckpt["features"] == list(TINY) and ckpt["epoch"] == 3
    for k, v in model.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])
    assert [p.name for p in tmp_path.iterdir()] == ["m.pth.tar"]  # no temp file left


def test_wrong_keys_are_all_named_in_one_error(tmp_path):
    state = authors_unet_state()
    del state["downs.0.conv.0.weight"]
    state["extra.head.weight"] = torch.zeros(2)
    state["final_conv.weight"] = torch.zeros(5, 4, 1, 1)
    path = tmp_path / "bad.pth.tar"
    torch.save({"state_dict": state}, path)
    with pytest.raises(ModelError) as err:
        load_checkpoint(create_model("unet", features=TINY), path)
    msg = str(err.value)
    assert "\n" not in msg and "bad.pth.tar" in msg
    assert "downs.0.conv.0.weight" in msg and "extra.head.weight" in msg
    assert "final_conv.weight (checkpoint [5, 4, 1, 1] vs model [38, 4, 1, 1])" in msg


def test_wrong_architecture_truncates_hundreds_of_keys(tmp_path):
    path = tmp_path / "att.pth.tar"
    torch.save({"state_dict": authors_attention_state()}, path)
    with pytest.raises(ModelError) as err:
        load_checkpoint(create_model("unet", features=TINY), path)
    msg = str(err.value)
    assert "missing key(s)" in msg and "unexpected key(s)" in msg and "more" in msg
    assert len(msg) < 3000


def test_wrong_widths_are_shape_mismatches(tmp_path):
    path = tmp_path / "wide.pth.tar"
    torch.save({"state_dict": authors_unet_state((8, 16, 32, 64))}, path)
    with pytest.raises(ModelError, match="shape mismatch"):
        load_checkpoint(create_model("unet", features=TINY), path)


@pytest.mark.parametrize(
    "content, match",
    [
        (b"this is not a checkpoint", "not a readable PyTorch checkpoint"),
        ({"epoch": 3}, "no 'state_dict'"),
        ([1, 2, 3], "not a checkpoint"),
        ({"state_dict": 5}, "not a dict of weights"),
    ],
)
def test_not_a_checkpoint(tmp_path, content, match):
    path = tmp_path / "x.pth.tar"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ModelError, match=match):
        read_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="checkpoint not found"):
        read_checkpoint(tmp_path / "nope.pth.tar")


class _Evil:
    """Unpickling this calls ``open(target, "w")``: it creates a file."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, writer):
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pth.tar"
    payload = {"state_dict": {"w": torch.zeros(1)}, "hook": _Evil(target)}
    if writer == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ModelError) as err:
        load_checkpoint(create_model("unet", features=TINY), path)
    assert not target.exists()
    msg = str(err.value)
    assert "\n" not in msg and "would run code" in msg
    # the payload is real: an unsafe loader would have created the file
    if writer == "torch":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert target.exists()
