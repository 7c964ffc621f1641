"""Generative-model metrics: FID, KID and improved precision/recall over a classifier card's features.

Any classifier card can be the feature network (``inception-v3-fid`` for numbers comparable with papers, a
CIFAR ResNet for fast in-domain checks): the features are the input of the card's ``head`` module. The
metrics take feature matrices, so a task computes the real set's features once (`reference_features` caches
them on disk) and only the generated set's per evaluation. FID and KID follow torchmetrics 1.9 formula for
formula, so numbers agree with it on the same features. This module is imported only by generative tasks,
which need torch anyway, so torch is imported at the top.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Final

import torch
from torch import Tensor, nn

from .._config import cache_root
from ..errors import ZooError

__all__ = [
    "FeatureNet",
    "check_sample_size",
    "feature_extractor",
    "frechet_distance",
    "kernel_inception_distance",
    "precision_recall",
    "reference_features",
]

REFERENCE_DIR: Final = "generative-reference"
_CDIST_ROWS: Final = 1024  # rows of a distance matrix per chunk: 1024 x 50,000 float64 is 400 MB at most


class FeatureNet:
    """A classifier card's penultimate features (the input of its head), on images in [0, 1] or uint8.

    ``name``, ``sha256`` and ``preprocess_desc`` identify the features: they key the reference cache, so a
    changed card, weights file or preprocessing never reuses stale statistics.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        head: nn.Module,
        *,
        sha256: str,
        size: tuple[int, int],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        device: torch.device,
    ) -> None:
        self.name: Final = name
        self.sha256: Final = sha256
        self.device: Final = device
        self.preprocess_desc: Final = (
            f"[0,1] -> bilinear resize to {size[0]}x{size[1]} if needed "
            "(antialias=False, align_corners=False) -> "
            f"(x - {list(mean)}) / {list(std)}"
        )
        self._model = model
        self._size = size
        self._dtype = next(model.parameters()).dtype
        self._mean = torch.tensor(mean, device=device, dtype=self._dtype).view(1, -1, 1, 1)
        self._std = torch.tensor(std, device=device, dtype=self._dtype).view(1, -1, 1, 1)
        self._captured: list[Tensor] = []
        head.register_forward_pre_hook(lambda _module, args: self._captured.append(args[0]))
        in_features = getattr(head, "in_features", None)
        if isinstance(in_features, int):
            self.dim: int = in_features
        else:  # a head that does not say its width (a conv, a custom block): measure it once
            self.dim = self(torch.zeros(1, 3, *size)).shape[1]

    def __call__(self, images: Tensor) -> Tensor:
        """N x D float64 features (on the CPU, so a long run can accumulate them off the device)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ZooError(
                f"Feature network {self.name!r} takes N x 3 x H x W images, got shape "
                f"{tuple(images.shape)}; add a batch dimension or convert to RGB."
            )
        if not (images.dtype == torch.uint8 or images.is_floating_point()):
            raise ZooError(f"Feature network {self.name!r} takes uint8 or float images, got {images.dtype}.")
        self._captured.clear()
        with torch.inference_mode():
            if images.dtype == torch.uint8:
                x = images.to(self.device, self._dtype) / 255.0
            else:
                if images.numel() and (images.min() < 0 or images.max() > 1):
                    raise ZooError(
                        f"Feature network {self.name!r} takes float images in [0, 1], got values in "
                        f"[{images.min().item():.3g}, {images.max().item():.3g}]; map a generator's "
                        "[-1, 1] output with (x + 1) / 2 first."
                    )
                x = images.to(self.device, self._dtype)
            if tuple(x.shape[-2:]) != self._size:
                x = nn.functional.interpolate(x, size=self._size, mode="bilinear", align_corners=False, antialias=False)
            self._model((x - self._mean) / self._std)
        if len(self._captured) != 1:
            raise ZooError(
                f"The head of {self.name!r} ran {len(self._captured)} times in one forward pass; "
                "its features are ambiguous. Use a card whose head runs once."
            )
        features = self._captured.pop().flatten(1)
        return features.to("cpu", torch.float64)


def feature_extractor(name: str, device: str | torch.device | None) -> FeatureNet:
    """The feature network of classifier card `name` (weights fetched and verified like `zoo.load`)."""
    from .. import _api
    from .._registry import get_registry
    from .._store import Store

    resolved = get_registry().resolve(name)
    card = resolved.card
    if card.task != "classifier":
        raise ZooError(
            f"'{name}' is a {card.task}, not a classifier: --features needs a classifier card (e.g. resnet56-cifar)"
        )
    if not card.head or card.preprocess is None or len(card.input_shape) != 3:
        raise ZooError(
            f"Classifier card {name!r} lacks head, input.shape or preprocess, which the features "
            "need; add them to the card."
        )
    model = _api.load(name, device=device)
    variant = resolved.variant
    sha256 = Store().known_sha256(variant) if variant is not None else None
    if sha256 is None:  # zoo.load has just fetched and verified it: only a cache removed meanwhile gets here
        raise ZooError(f"The weights of {name!r} have no recorded sha256 after loading; run the command again.")
    head = model.get_submodule(card.head)
    device_of = next(model.parameters()).device
    return FeatureNet(
        name,
        model,
        head,
        sha256=sha256,
        size=(card.input_shape[1], card.input_shape[2]),
        mean=card.preprocess.mean,
        std=card.preprocess.std,
        device=device_of,
    )


# -- metrics on feature matrices ------------------------------------------------------------------------


def check_sample_size(n: int, dim: int, what: str) -> None:
    """Refuse an estimate whose covariance would be rank-deficient: `what` (e.g. "FID") from `n` samples of
    `dim`-d features. Below 2 x dim, FID is dominated by the estimator's bias, not the model."""
    if n < 2 * dim:
        raise ZooError(
            f"{what} with {n} samples in a {dim}-dimensional feature space is not a usable estimate: "
            f"the covariance needs well over {dim} samples (use --samples {2 * dim} or more)"
        )


def _check_pair(real: Tensor, fake: Tensor, what: str, least: int) -> tuple[Tensor, Tensor]:
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ZooError(
            f"{what} needs two N x D feature matrices of the same D, got {tuple(real.shape)} and {tuple(fake.shape)}."
        )
    if min(len(real), len(fake)) < least:
        raise ZooError(
            f"{what} needs at least {least} samples in each set, got {len(real)} real and {len(fake)} generated."
        )
    return real.to(torch.float64), fake.to(torch.float64)


def _mean_cov(features: Tensor) -> tuple[Tensor, Tensor]:
    mean = features.mean(dim=0)
    centred = features - mean
    return mean, centred.T @ centred / (len(features) - 1)


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """FID between two feature sets: ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2))."""
    real, fake = _check_pair(real, fake, "FID", 2)
    mu1, s1 = _mean_cov(real)
    mu2, s2 = _mean_cov(fake)
    # As torchmetrics: tr(sqrt(S1 S2)) is the sum of the square roots of S1 S2's eigenvalues (real and >= 0 in
    # exact arithmetic; the tiny negative ones rounding leaves become imaginary roots and are dropped by .real).
    trace_sqrt = torch.linalg.eigvals(s1 @ s2).sqrt().real.sum()
    return float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * trace_sqrt)


def _poly_mmd(x: Tensor, y: Tensor) -> Tensor:
    """Unbiased MMD^2 with k(a, b) = (a.b / D + 1)^3 (Binkowski et al. 2018), as torchmetrics computes it."""
    gamma, m = 1.0 / x.shape[1], len(x)
    k_xx = (x @ x.T * gamma + 1) ** 3
    k_yy = (y @ y.T * gamma + 1) ** 3
    k_xy = (x @ y.T * gamma + 1) ** 3
    within = (k_xx.sum() - k_xx.diagonal().sum()) + (k_yy.sum() - k_yy.diagonal().sum())
    return within / (m * (m - 1)) - 2 * k_xy.sum() / m**2


def kernel_inception_distance(
    real: Tensor, fake: Tensor, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID: (mean, population std) of the unbiased polynomial-kernel MMD^2 over random equal-size subsets.

    Subsets are drawn without replacement from a generator seeded with `seed` (real, then generated, per
    subset: torchmetrics' order), so a result is reproducible.
    """
    real, fake = _check_pair(real, fake, "KID", 2)
    size = min(subset_size, len(real), len(fake))
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        x = real[torch.randperm(len(real), generator=generator)[:size].to(real.device)]
        y = fake[torch.randperm(len(fake), generator=generator)[:size].to(fake.device)]
        scores.append(_poly_mmd(x, y))
    stacked = torch.stack(scores)
    return float(stacked.mean()), float(stacked.std(unbiased=False))


def _inside_any_ball(query: Tensor, points: Tensor, radii: Tensor) -> Tensor:
    """For each query row: is it within radii[j] of some points[j] (on or inside a k-NN ball)?"""
    inside = torch.empty(len(query), dtype=torch.bool, device=query.device)
    for start in range(0, len(query), _CDIST_ROWS):
        distances = torch.cdist(query[start : start + _CDIST_ROWS], points)
        inside[start : start + _CDIST_ROWS] = (distances <= radii.unsqueeze(0)).any(dim=1)
    return inside


def _knn_radii(points: Tensor, k: int) -> Tensor:
    """Distance from each point to its k-th nearest other point (the point itself is at distance 0)."""
    radii = torch.empty(len(points), dtype=points.dtype, device=points.device)
    for start in range(0, len(points), _CDIST_ROWS):
        distances = torch.cdist(points[start : start + _CDIST_ROWS], points)
        radii[start : start + _CDIST_ROWS] = distances.topk(k + 1, dim=1, largest=False).values[:, k]
    return radii


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): precision is the share of generated samples
    inside the real manifold (the union of each real sample's k-NN ball), recall the share of real samples
    inside the generated one."""
    real, fake = _check_pair(real, fake, "Precision/recall", k + 1)
    precision = _inside_any_ball(fake, real, _knn_radii(real, k)).double().mean()
    recall = _inside_any_ball(real, fake, _knn_radii(fake, k)).double().mean()
    return float(precision), float(recall)


# -- the real set's features, cached ---------------------------------------------------------------------


def _reference_key(data_key: str, feature: FeatureNet) -> str:
    fields = [data_key, feature.name, feature.sha256, feature.preprocess_desc]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def _read_reference(path: os.PathLike, key: str, dim: int) -> Tensor | None:
    """The cached features, or None when the file is missing, unreadable or not what `key` names."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            stored_key = (f.metadata() or {}).get("key")
            features = f.get_tensor("features")
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - any damage (truncation, a bad header) means: compute again
        logging.getLogger("zoo").warning("Recomputing reference features: %s is unreadable (%s).", path, exc)
        return None
    if stored_key != key or features.ndim != 2 or features.shape[1] != dim or features.dtype != torch.float32:
        logging.getLogger("zoo").warning("Recomputing reference features: %s does not match its name.", path)
        return None
    return features


def reference_features(data_key: str, feature: FeatureNet, batches: Callable[[], Iterator[Tensor]]) -> Tensor:
    """The real set's features (N x D float64), from `$ZOO_HOME/generative-reference/` or computed and stored.

    `data_key` must change whenever the images `batches()` yields do (e.g. the dataset's content key plus the
    split). Features are stored as float32, and the float32 values are returned on the first run too, so a
    FID does not change between the run that filled the cache and the ones that read it.
    """
    from safetensors.torch import save_file

    from .files import default_mode

    key = _reference_key(data_key, feature)
    directory = cache_root() / REFERENCE_DIR
    path = directory / f"{key}.safetensors"
    cached = _read_reference(path, key, feature.dim)
    if cached is not None:
        return cached.to(torch.float64)
    parts = [feature(images).to(torch.float32) for images in batches()]
    if not parts:
        raise ZooError(f"The reference data {data_key!r} yielded no images; check the dataset path and split.")
    features = torch.cat(parts)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        save_file(
            {"features": features.contiguous()},
            os.fspath(tmp),
            metadata={"key": key, "data": data_key, "features": feature.name},
        )
        default_mode(tmp)  # safetensors writes 0600
        os.replace(tmp, path)  # readers see the old file or the whole new one, never half of it
    finally:
        tmp.unlink(missing_ok=True)
    return features.to(torch.float64)
