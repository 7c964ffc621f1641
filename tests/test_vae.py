"""The VAE plugin (#17): its likelihood, its KL, the task through zoo's runtime and the contract cycle."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from tests.contract.cycle import run_cycle, zoo_cli
from zoo_vae.likelihood import channel_means, discretized_logistic_log_prob, discretized_logistic_nll, gaussian_kl
from zoo_vae.models import build_vae_cifar, mean_image

REPO = Path(__file__).resolve().parents[1]
TINY = {"latent_channels": 4, "width": 8, "coupling": True}  # a fast VAE for the runtime tests


def make_blobs(root: Path, per_class: int = 20, seed: int = 0) -> Path:
    """Smooth colour gradients with a bright or dark blob and a little noise, in two class folders: images a VAE
    learns something about in a few steps."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:32, 0:32] / 31.0
    for c, label in enumerate(("dark", "light")):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = rng.uniform(40, 200, 3) + rng.uniform(-40, 40, 3) * (xs[..., None] if i % 2 else ys[..., None])
            cy, cx = rng.uniform(8, 24, 2)
            blob = np.exp(-((ys * 31 - cy) ** 2 + (xs * 31 - cx) ** 2) / 30.0)[..., None]
            image = base + (60 if c else -60) * blob + rng.normal(0, 4, (32, 32, 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / label / f"{i:03d}.png")
    return root


def register_vae_card(
    directory: Path, monkeypatch: pytest.MonkeyPatch, name: str = "tiny-vae", kwargs: dict | None = None
) -> str:
    """A user-registry VAE card with a seeded random init as its weights (test-only data); returns its name."""
    from safetensors.torch import save_file

    kwargs = kwargs or TINY
    torch.manual_seed(0)
    weights = directory / f"{name}.safetensors"
    save_file(perturbed(build_vae_cifar(**kwargs)).state_dict(), str(weights))
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    registry = directory / f"{name}.yaml"
    registry.write_text(
        f"models:\n  {name}:\n    task: vae\n    builder: zoo_vae.models:build_vae_cifar\n"
        f"    kwargs: {json.dumps(kwargs)}\n    input: {{shape: [3, 32, 32]}}\n"
        "    preprocess: {resize: 32, crop: 32, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}\n"
        f"    weights:\n      v1: {{uri: {weights.name}, sha256: {sha}}}\n"
    )
    monkeypatch.setenv("ZOO_REGISTRY", str(registry))
    zoo._registry.reset_registry()
    return name


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with random weights where a fresh VAE has zeros (the residual blocks' second convolutions) and wider
    heads, so that it draws clearly different images for different latents, as a trained one does."""
    with torch.no_grad():
        for module_name, module in model.named_modules():
            if module_name.endswith("conv2") or module_name in ("posterior", "likelihood"):
                module.weight.normal_(0.0, 0.05)
    return model


# -- the likelihood -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_256_probabilities_of_a_sub_pixel_sum_to_one(dtype):
    """Random locations (also far outside [-1, 1]) and scales from PixelCNN++'s floor to wide: sum_k P(k) == 1."""
    generator = torch.Generator().manual_seed(0)
    mean = (torch.randn(1, 2000, generator=generator) * 1.5).to(dtype)
    log_scale = (torch.rand(1, 2000, generator=generator) * 9.0 - 7.0).to(dtype)
    levels = torch.arange(256, dtype=torch.uint8).view(256, 1)
    total = discretized_logistic_log_prob(levels, mean, log_scale).exp().sum(0)
    assert total.dtype == dtype
    assert (total - 1.0).abs().max() < 1e-5, (total - 1.0).abs().max()
    # the same through the per-image NLL: one "image" per level, exp(-nll) summed over levels
    nll = discretized_logistic_nll(
        levels.view(256, 1, 1, 1), mean[:, :1].view(1, 1, 1, 1), log_scale[:, :1].view(1, 1, 1, 1)
    )
    assert abs(float(torch.exp(-nll).sum()) - 1.0) < 1e-5


def test_the_likelihood_matches_the_logistic_cdf_computed_by_brute_force():
    """Each bin's mass is CDF(upper edge) - CDF(lower edge) of the logistic (float64, by hand); the first and last
    bins take the tails; uint8 input and bin centres in [-1, 1] give the same."""
    generator = torch.Generator().manual_seed(1)
    levels = torch.randint(0, 256, (4000,), generator=generator)
    levels[:10], levels[10:20] = 0, 255
    mean = torch.rand(4000, generator=generator) * 2.4 - 1.2
    log_scale = torch.rand(4000, generator=generator) * 5.0 - 5.0

    def cdf(v: torch.Tensor) -> torch.Tensor:
        return 1.0 / (1.0 + torch.exp(-(v - mean.double()) / log_scale.double().exp()))

    x = levels.double() / 127.5 - 1.0
    upper = torch.where(levels == 255, torch.ones_like(x), cdf(x + 1 / 255))
    lower = torch.where(levels == 0, torch.zeros_like(x), cdf(x - 1 / 255))
    brute = upper - lower
    ours = discretized_logistic_log_prob(levels.to(torch.uint8), mean, log_scale).double().exp()
    scaled = discretized_logistic_log_prob(x.float(), mean, log_scale).double().exp()
    keep = brute > 1e-8  # below that the brute force itself loses its digits to cancellation
    assert keep.sum() > 1000
    assert torch.allclose(ours[keep], brute[keep], rtol=1e-4, atol=1e-9), (ours - brute).abs().max()
    assert torch.allclose(scaled, ours, rtol=1e-6, atol=0)


def test_channel_coupling_moves_green_with_red_and_blue_with_both():
    mean = torch.zeros(1, 3, 1, 1)
    coeffs = torch.tensor([0.5, -0.25, 0.75]).view(1, 3, 1, 1)
    x = torch.tensor([0.4, -0.2, 0.0]).view(1, 3, 1, 1)
    shifted = channel_means(mean, coeffs, x).flatten().tolist()
    assert shifted == pytest.approx([0.0, 0.5 * 0.4, -0.25 * 0.4 + 0.75 * -0.2])
    assert channel_means(mean, None, x) is mean


def test_kl_matches_torch_distributions():
    from torch.distributions import Normal, kl_divergence

    generator = torch.Generator().manual_seed(2)
    mu = torch.randn(5, 4, 8, 8, generator=generator)
    logvar = torch.randn(5, 4, 8, 8, generator=generator)
    expected = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1)
    assert torch.allclose(gaussian_kl(mu, logvar), expected, rtol=1e-5, atol=1e-5)


# -- the model ------------------------------------------------------------------------------------------------


def test_the_cifar_vae_shapes_and_size():
    model = build_vae_cifar()
    assert 1_000_000 <= sum(p.numel() for p in model.parameters()) <= 3_000_000
    assert sum(p.numel() for p in model.parameters()) == zoo.card("vae-cifar").params
    assert model.latent_shape == (32, 8, 8)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    model.eval().requires_grad_(False)
    out = model(x)
    assert out.mean.shape == out.log_scale.shape == out.coeffs.shape == (2, 3, 32, 32)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (2, 32, 8, 8)
    again = model(x)
    assert torch.equal(out.z, again.z), "evaluation mode draws the same latent every time"
    image = model.sample_images(model.decode(out.z))
    assert image.shape == (2, 3, 32, 32) and 0 <= float(image.min()) and float(image.max()) <= 1


def test_the_mean_image_is_the_mean_of_the_coupled_logistics():
    """Without coupling, the mean image is the locations mapped to [0, 1]; with it, green and blue move by the
    coefficients times the red and green locations."""
    from zoo_vae.models import LogisticParams

    mean = torch.tensor([0.2, -0.4, 0.1]).view(1, 3, 1, 1)
    coeffs = torch.tensor([0.5, 0.5, -1.0]).view(1, 3, 1, 1)
    plain = mean_image(LogisticParams(mean, torch.zeros_like(mean), None)).flatten().tolist()
    assert plain == pytest.approx([0.6, 0.3, 0.55])
    r, g = 0.2, -0.4 + 0.5 * 0.2
    coupled = mean_image(LogisticParams(mean, torch.zeros_like(mean), coeffs)).flatten().tolist()
    assert coupled == pytest.approx([(r + 1) / 2, (g + 1) / 2, (0.1 + 0.5 * r - g + 1) / 2])


# -- the task through zoo -------------------------------------------------------------------------------------


def test_predict_with_the_shipped_weights(monkeypatch):
    """vae-cifar's shipped weights (plugins/zoo_vae/weights), offline: a trained model's bits/dim on a real photo
    (a random init scores above 8)."""
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    result = zoo_cli("predict", "vae-cifar", REPO / "examples" / "images" / "horse.png", "--device", "cpu", "--json")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.output)
    assert 2.0 < record["bits_per_dim"] < 6.5 and record["psnr"] > 15, {
        k: v for k, v in record.items() if k != "latent"
    }


def test_predict_writes_input_and_reconstruction_side_by_side(tmp_path, monkeypatch):
    from torchvision.io import decode_png, read_file

    name = register_vae_card(tmp_path, monkeypatch)
    horse = REPO / "examples" / "images" / "horse.png"
    result = zoo_cli("predict", name, horse, "--json", "-o", tmp_path / "out", "--device", "cpu")
    assert result.exit_code == 0, result.output
    [record] = json.loads(result.stdout)
    assert set(record) == {"image", "bits_per_dim", "mse", "psnr", "latent", "files"}, record
    assert len(record["latent"]) == 4 * 8 * 8 and record["bits_per_dim"] > 0
    png = Path(record["files"][0])
    assert png.name == "horse-reconstruction.png" and png.parent == tmp_path / "out"
    pair = decode_png(read_file(str(png)))
    assert tuple(pair.shape) == (3, 4 * 32, 4 * 65)  # input | white column | reconstruction, 4x
    text = zoo_cli("predict", name, horse, "--device", "cpu").stdout
    assert text.startswith(f"{horse}: ") and "bits/dim" in text and "PSNR" in text, text


def test_sample_draws_each_image_from_its_own_noise():
    """z ~ N(0, I) through Noise: a sample depends on its seed only, not on the batch it was drawn in."""
    from zoo.runtime.sample import Noise
    from zoo_vae.task import VaeTask

    task = VaeTask(zoo.card("vae-cifar"))
    assert task.conditional is False and "sample" in task.verbs
    torch.manual_seed(0)
    model = perturbed(build_vae_cifar(**TINY)).eval()
    with torch.inference_mode():
        both = task.sample(model, Noise([11, 12]), None)
        alone = task.sample(model, Noise([12]), None)
        cold = task.sample(model, Noise([12]), None, temperature=0.0)
    assert both.shape == (2, 3, 32, 32) and both.dtype == torch.float32
    assert 0 <= float(both.min()) and float(both.max()) <= 1
    assert torch.allclose(both[1:], alone, atol=1e-5, rtol=0)  # the same draw (convolutions round per batch size)
    assert not torch.equal(both[0], both[1])
    zero = model.sample_images(model.decode(torch.zeros(1, *model.latent_shape)))
    assert torch.allclose(cold, zero, atol=1e-5, rtol=0)


def test_finetune_from_scratch_lowers_the_loss_and_writes_a_card(tmp_path):
    from zoo.runtime.finetune import FinetuneConfig, finetune

    data = make_blobs(tmp_path / "data")
    # 1e-3, a 128-image batch's rate rather than the 1/8 of it batch 16 would get: six steps must show progress
    config = FinetuneConfig(pretrained=False, epochs=2, batch_size=16, optimizer="adamw", lr=1e-3)
    result = finetune("vae-cifar", data, tmp_path / "blob-vae", config=config, device="cpu", show_progress=False)
    first, second = result.history
    assert second["train_loss"] < first["train_loss"], result.history
    assert second["train_bits_per_dim"] < first["train_bits_per_dim"], result.history
    assert math.isclose(first["train_loss"] / math.log(2), first["train_bits_per_dim"], rel_tol=1e-3)
    assert second["val_bits_per_dim"] < first["val_bits_per_dim"], result.history
    card = zoo.card("blob-vae")
    assert card.plugin == "user" and card.task == "vae" and card.labels == ()
    [figure] = card.variant().metrics
    assert figure.name == "bits_per_dim" and figure.value == round(result.best_value, 4)
    assert "--val-split 0.1 --seed 0" in figure.note


def test_eval_is_the_same_at_any_batch_size_and_holds_out_the_classifiers_images(tmp_path, monkeypatch):
    from zoo.runtime.evaluate import evaluate
    from zoo.runtime.splits import stratified_split

    data = make_blobs(tmp_path / "data")
    name = register_vae_card(tmp_path, monkeypatch)
    small = evaluate(name, data, device="cpu", batch_size=3, show_progress=False, precision="fp32")
    large = evaluate(name, data, device="cpu", batch_size=64, show_progress=False, precision="fp32")
    assert list(small.metrics) == ["bits_per_dim", "nll_bits_per_dim", "kl_bits_per_dim", "mse", "psnr", "images"]
    assert small.metrics["images"] == 40
    assert small.metrics == large.metrics
    parts = small.metrics["nll_bits_per_dim"] + small.metrics["kl_bits_per_dim"]
    assert abs(parts - small.metrics["bits_per_dim"]) <= 2e-4
    held = evaluate(name, data, device="cpu", val_split=0.1, seed=0, show_progress=False, precision="fp32")
    assert held.images == len(stratified_split(torch.tensor([0] * 20 + [1] * 20), 0.1, 0)[1]) == 4


def test_contract_cycle(tmp_path, monkeypatch):
    data = make_blobs(tmp_path / "data", per_class=10)
    name = register_vae_card(tmp_path, monkeypatch)
    report = run_cycle(
        name,
        data,
        [data / "dark" / "000.png", data / "light" / "001.png"],
        tmp_path / "work",
        finetune_options={"batch_size": 8, "val_split": 0.2, "optimizer": "adamw"},
    )  # 16 + 4
    print(report)
    assert report.verbs == ("predict", "eval", "finetune", "sample")
