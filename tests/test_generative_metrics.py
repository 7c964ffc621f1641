"""FID, KID and precision/recall against torchmetrics and closed forms; feature networks from classifier cards.

No real weights are downloaded: the FID Inception end-to-end test serves a randomly initialised checkpoint from
127.0.0.1 under the real file name, with a card copy pinned by that file's own sha256 prefix.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
import yaml
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

import zoo
from tests.conftest import REPO, register_resnet20_card, require_shared
from tests.httpserver import Behaviour
from zoo._registry import reset_registry
from zoo._store import Store
from zoo.errors import WeightsError, ZooError
from zoo.runtime import generative_metrics as gm
from zoo_classifier.fid_inception import build_fid_inception

pytestmark = pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save:UserWarning")


class Passthrough(nn.Module):
    """A torchmetrics feature module whose 'images' already are the features: both sides see the same numbers."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def feature_sets(n_real: int = 400, n_fake: int = 300, dim: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Two correlated, differently shaped Gaussian-ish clouds (float64)."""
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(dim, dim, generator=g, dtype=torch.float64)
    real = torch.randn(n_real, dim, generator=g, dtype=torch.float64) @ mix
    fake = (torch.randn(n_fake, dim, generator=g, dtype=torch.float64) * 1.3 + 0.4) @ mix.T
    return real, fake


# -- metrics ----------------------------------------------------------------------------------------


def test_fid_equals_torchmetrics_on_the_same_features():
    real, fake = feature_sets()
    metric = FrechetInceptionDistance(feature=Passthrough(real.shape[1]))
    metric.update(real, real=True)
    metric.update(fake, real=False)
    expected = float(metric.compute())
    assert expected > 1.0  # a real difference, not two near-zero numbers
    assert gm.frechet_distance(real, fake) == pytest.approx(expected, rel=1e-6)


def test_fid_closed_forms():
    real, _ = feature_sets(n_real=500, dim=16)
    assert abs(gm.frechet_distance(real, real)) < 1e-8 * real.var(dim=0).sum().item()
    shift = torch.linspace(-1, 2, 16, dtype=torch.float64)
    # same covariance, means apart by `shift`: FID is |shift|^2 exactly
    assert gm.frechet_distance(real, real + shift) == pytest.approx(shift.square().sum().item(), rel=1e-8)
    # float32 input is computed in float64 like float64 input
    a, b = real.float(), (real + shift).float()
    assert gm.frechet_distance(a, b) == pytest.approx(gm.frechet_distance(a.double(), b.double()), rel=1e-12)


@pytest.mark.parametrize("n_real, subset_size", [(400, 120), (90, 1000)])
def test_kid_equals_torchmetrics_on_the_same_features(n_real, subset_size):
    """Same subsets (torchmetrics draws from the global generator; seeding it with our seed gives our draws),
    same kernel, same unbiased MMD; a subset larger than a set shrinks to the smaller set."""
    real, fake = feature_sets(n_real=n_real)
    size = min(subset_size, len(real), len(fake))
    metric = KernelInceptionDistance(feature=Passthrough(real.shape[1]), subsets=15, subset_size=size)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    torch.manual_seed(7)
    expected_mean, expected_std = (float(v) for v in metric.compute())
    mean, std = gm.kernel_inception_distance(real, fake, subsets=15, subset_size=subset_size, seed=7)
    assert expected_mean > 0.1 and expected_std > 0
    assert mean == pytest.approx(expected_mean, rel=1e-9)
    assert std == pytest.approx(expected_std, rel=1e-9)
    assert gm.kernel_inception_distance(real, fake, subsets=15, subset_size=subset_size, seed=8)[0] != mean


def test_precision_recall_identical_disjoint_and_half(monkeypatch):
    real, _ = feature_sets(n_real=200, dim=8)
    assert gm.precision_recall(real, real.clone()) == (1.0, 1.0)
    assert gm.precision_recall(real, real + 1e4) == (0.0, 0.0)
    # half the generated set copies real samples, half is far away: exactly half of it is on the real manifold
    monkeypatch.setattr(gm, "_CDIST_ROWS", 7)  # and the chunked path gives the same answers
    half = torch.cat([real[:50], real[50:100] + 1e4])
    precision, _ = gm.precision_recall(real, half)
    assert precision == 0.5


def test_precision_recall_matches_a_brute_force_reference(monkeypatch):
    real, fake = feature_sets(n_real=150, n_fake=120, dim=6)
    k = 4

    def covered(query: torch.Tensor, points: torch.Tensor) -> float:
        radii = torch.cdist(points, points).sort(dim=1).values[:, k]  # column 0 is the point itself
        return (torch.cdist(query, points) <= radii).any(dim=1).double().mean().item()

    expected = (covered(fake, real), covered(real, fake))
    assert 0.0 < expected[0] < 1.0 and 0.0 < expected[1] < 1.0
    monkeypatch.setattr(gm, "_CDIST_ROWS", 16)
    assert gm.precision_recall(real, fake, k=k) == pytest.approx(expected, abs=1e-12)


def test_sample_size_and_shape_refusals():
    with pytest.raises(ZooError) as info:
        gm.check_sample_size(1000, 2048, "FID")
    assert str(info.value) == (
        "FID with 1000 samples in a 2048-dimensional feature space is not a usable estimate: the covariance "
        "needs well over 2048 samples (use --samples 4096 or more)"
    )
    gm.check_sample_size(4096, 2048, "FID")
    with pytest.raises(ZooError, match="same D"):
        gm.frechet_distance(torch.zeros(10, 3), torch.zeros(10, 4))
    with pytest.raises(ZooError, match="at least 2 samples"):
        gm.kernel_inception_distance(torch.zeros(1, 3), torch.zeros(10, 3))


# -- feature networks -------------------------------------------------------------------------------


def test_a_detector_card_is_refused_in_one_line():
    with pytest.raises(ZooError) as info:
        gm.feature_extractor("fastestdet-coco", "cpu")
    assert str(info.value) == (
        "'fastestdet-coco' is a detector, not a classifier: --features needs a classifier card (e.g. resnet56-cifar)"
    )


@pytest.fixture()
def resnet20_features(tmp_path, monkeypatch) -> gm.FeatureNet:
    name = register_resnet20_card(tmp_path, monkeypatch, "tiny-features", ["a", "b", "c"])
    return gm.feature_extractor(name, "cpu")


def test_features_are_the_heads_input(resnet20_features):
    """Features through the card's head give the model's logits; uint8 and [0, 1] float inputs agree."""
    feature = resnet20_features
    card = zoo.card("tiny-features")
    assert (feature.dim, feature.sha256) == (64, card.variant().sha256)
    torch.manual_seed(1)
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    features = feature(images)
    assert features.dtype == torch.float64 and features.shape == (5, 64)
    model = zoo.load("tiny-features", device="cpu")
    x = (images / 255.0 - torch.tensor(card.preprocess.mean).view(1, 3, 1, 1)) / torch.tensor(card.preprocess.std).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        logits = model(x)
        via_head = model.linear(features.float())
    torch.testing.assert_close(via_head, logits)
    torch.testing.assert_close(feature(images.float() / 255), features)
    with pytest.raises(ZooError, match=r"in \[0, 1\]"):
        feature(images.float())
    with pytest.raises(ZooError, match="N x 3 x H x W"):
        feature(images[0])


def test_reference_features_are_cached_and_recomputed_when_damaged(resnet20_features, zoo_home):
    feature = resnet20_features
    torch.manual_seed(2)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    calls = []

    def batches():
        calls.append(1)
        yield images[:4]
        yield images[4:]

    first = gm.reference_features("toy-set:train", feature, batches)
    assert first.dtype == torch.float64 and first.shape == (6, 64) and len(calls) == 1
    torch.testing.assert_close(first, feature(images).float().double())  # stored float32, returned as such
    (path,) = (zoo_home / "generative-reference").iterdir()
    assert path.suffix == ".safetensors"
    assert torch.equal(gm.reference_features("toy-set:train", feature, batches), first) and len(calls) == 1

    path.write_bytes(path.read_bytes()[:100])  # truncated: recomputed, not trusted
    assert torch.equal(gm.reference_features("toy-set:train", feature, batches), first) and len(calls) == 2
    # another data key is another file; a file under the wrong name is not used for it
    gm.reference_features("toy-set:val", feature, batches)
    assert len(calls) == 3 and len(list((zoo_home / "generative-reference").iterdir())) == 2
    other = next(p for p in (zoo_home / "generative-reference").iterdir() if p != path)
    path.write_bytes(other.read_bytes())
    gm.reference_features("toy-set:train", feature, batches)
    assert len(calls) == 4
    assert not list(zoo_home.glob("generative-reference/*.partial"))
    with pytest.raises(ZooError, match="yielded no images"):
        gm.reference_features("empty", feature, lambda: iter(()))


def test_fid_inception_card_downloads_pins_converts_and_gives_2048_features(
    tmp_path, monkeypatch, server, zoo_home, caplog
):
    name = "inception-v3-fid"
    real_card = zoo.card(name)
    assert (real_card.task, real_card.head, real_card.input_shape) == ("classifier", "fc", (3, 299, 299))
    file_name = real_card.variant().uri.rsplit("/", 1)[-1]  # pt_inception-2015-12-05-6726825d.pth
    torch.manual_seed(0)
    model = build_fid_inception()
    # Random init shrinks activations to ~1e-8 by the last block; BatchNorm statistics of one batch keep them
    # near 1, so a wrong resize or normalisation shows in the features.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 299, 299) * 2 - 1)
    assert sum(p.numel() for p in model.parameters()) == real_card.params
    state = model.state_dict()
    checkpoint = tmp_path / file_name
    torch.save(state, checkpoint)
    data = checkpoint.read_bytes()
    full = hashlib.sha256(data).hexdigest()

    # The real card's prefix is enforced: our stand-in under the real file name is not pytorch-fid's file.
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / file_name).write_bytes(data)
    monkeypatch.setenv("ZOO_MIRROR", str(mirror))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    with pytest.raises(WeightsError, match="ZOO_OFFLINE=1 forbids downloading"):
        zoo.fetch(name)
    assert "does not start with the publisher's prefix 6726825d" in caplog.text
    monkeypatch.delenv("ZOO_MIRROR")
    monkeypatch.delenv("ZOO_OFFLINE")

    raw = yaml.safe_load((REPO / "registry.yaml").read_text())["models"][name]
    server.files[file_name] = Behaviour(data)
    raw["weights"]["tf-2015-12-05"].update(uri=server.url(file_name), sha256_prefix=full[:8])
    raw.pop("plugin")
    (tmp_path / "registry.yaml").write_text(yaml.safe_dump({"models": {"local-inception": raw}}, sort_keys=False))
    monkeypatch.setenv("ZOO_REGISTRY", str(tmp_path / "registry.yaml"))
    reset_registry()
    feature = gm.feature_extractor("local-inception", "cpu")
    pin = Store().read_pin(zoo.card("local-inception").variant(), model="local-inception")
    assert pin.sha256 == full and feature.sha256 == full and feature.dim == 2048
    assert (zoo_home / "weights" / f"{full}.safetensors").is_file()
    assert "299x299" in feature.preprocess_desc

    images = torch.rand(2, 3, 40, 48)
    features = feature(images)
    assert features.shape == (2, 2048) and features.dtype == torch.float64
    # pytorch-fid's preprocessing by hand: bilinear to 299 (align_corners=False), then [0, 1] -> [-1, 1]
    x = nn.functional.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    captured = []
    model.eval().fc.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    with torch.no_grad():
        model(x)
    assert features.abs().mean() > 0.05
    torch.testing.assert_close(features, captured[0].double(), rtol=1e-5, atol=1e-5)


def test_resnet56_cifar_features_from_the_shared_mirror(monkeypatch):
    monkeypatch.setenv("ZOO_MIRROR", str(require_shared("weights", "akamaster-resnet-cifar")))
    monkeypatch.setenv("ZOO_OFFLINE", "1")
    feature = gm.feature_extractor("resnet56-cifar", "cpu")
    assert feature.dim == 64 and feature.sha256 == zoo.card("resnet56-cifar").variant().sha256
    features = feature(torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8))
    assert features.shape == (3, 64) and (features >= 0).all()  # after the final ReLU and average pool
