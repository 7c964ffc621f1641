"""A published diffusers checkpoint as a card: `ddpm-cifar10-google` (google/ddpm-cifar10-32 on the hub).

The real file is 143 MB and online; the tests serve a tiny UNet2DModel in the same format from a local server that
answers like the hub (tests/hubserver.py): a pickled state dict written by old diffusers, whose attention layers
carry the names diffusers 0.x used (query/key/value/proj_attn). The card's own conversion rules and builder are
used, so what is tested is what an online user's fetch does, on a smaller model.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

import zoo
import zoo._registry
from zoo.cli import cli

CARD = "ddpm-cifar10-google"
TINY_UNET = {
    "block_out_channels": [16, 32],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "attention_head_dim": None,
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "norm_eps": 1e-6,
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
}
OLD_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def _old_diffusers_state(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The UNet's state dict with the attention names diffusers 0.x wrote (what google/ddpm-cifar10-32 holds)."""
    out = {}
    for key, value in unet.state_dict().items():
        for new, old in OLD_NAMES.items():
            key = re.sub(rf"(attentions\.\d+)\.{re.escape(new)}\.", rf"\1.{old}.", key)
        out[key] = value.clone()
    return out


def _card_like_google(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repo: str) -> str:
    """A user card that is the built-in one with a tiny UNet config and the test hub's repo."""
    builtin = yaml.safe_load(zoo._registry.builtin_registry_path().read_text())["models"][CARD]
    variant = dict(builtin["weights"]["google"])
    variant["uri"] = f"hf://{repo}/diffusion_pytorch_model.bin"
    variant.pop("metrics")
    spec = {
        **{k: builtin[k] for k in ("task", "builder", "input", "task_config", "license")},
        "preprocess": {"resize": 32, "crop": 32, "mean": [0.5] * 3, "std": [0.5] * 3},
        "kwargs": {**builtin["kwargs"], "unet": TINY_UNET, "timesteps": 20},
        "weights": {"google": variant},
    }
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump({"models": {"tiny-google": spec}}))
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "registry.yaml"))
    zoo._registry.reset_registry()
    return "tiny-google"


def test_the_builtin_card_builds_the_published_architecture():
    from zoo_diffusion.models import build_diffusers_unet

    card = zoo.card(CARD)
    with torch.device("meta"):
        model = build_diffusers_unet(**card.kwargs)
    assert sum(p.numel() for p in model.parameters()) == card.params == 35_746_307  # DDPM's 35.7M
    variant = card.variant()
    assert variant.uri == "hf://google/ddpm-cifar10-32/diffusion_pytorch_model.bin" and variant.hub_pinned
    assert model.variance == "fixed_large" and model.null_class is None


def test_a_published_diffusers_pickle_is_fetched_converted_and_sampled(tmp_path, monkeypatch, hub, zoo_home):
    from diffusers.models.unets.unet_2d import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(**TINY_UNET)
    torch.save(_old_diffusers_state(unet), tmp_path / "diffusion_pytorch_model.bin")
    data = (tmp_path / "diffusion_pytorch_model.bin").read_bytes()
    hub.add("acme/ddpm-tiny", "diffusion_pytorch_model.bin", data)
    name = _card_like_google(tmp_path, monkeypatch, "acme/ddpm-tiny")

    model = zoo.load(name, device="cpu")
    for key, value in unet.state_dict().items():  # every tensor arrived, under today's names
        torch.testing.assert_close(model.state_dict()[f"unet.{key}"], value)
    cached = list((zoo_home / "weights").glob("*.safetensors"))
    assert [p.stem for p in cached] == [hashlib.sha256(data).hexdigest()]  # named by the hub's sha256

    x = zoo.sample(name, n=2, seed=0, steps=3, sampler="ddpm")
    assert x.shape == (2, 3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1
    result = CliRunner().invoke(
        cli, ["sample", name, "-n", "2", "--seed", "0", "--steps", "3", "-o", str(tmp_path / "g.png")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "g.png").is_file() and len(hub.cdn_gets()) == 1  # fetched once
