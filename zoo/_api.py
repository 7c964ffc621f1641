"""The public functions behind `import zoo`. Torch is imported inside the functions that need it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._card import ModelCard
from ._registry import Resolved, get_registry
from ._store import Store
from .errors import WeightsError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torchvision.transforms import v2

__all__ = ["card", "evaluate", "explain", "export", "fetch", "finetune", "list_models", "load", "predict", "sample",
           "transforms"]


def card(name: str) -> ModelCard:
    """The model card for `name` (metadata only: no torch, no model code).

    Example:
        >>> zoo.card("resnet56-cifar").labels[:2]
        ('airplane', 'automobile')
    """
    return get_registry().card(name)


def list_models(pattern: str | None = None, *, task: str | None = None, plugin: str | None = None,
                pretrained: bool = False, sort: str | None = None, max_params: int | str | None = None,
                dataset: str | None = None, license: str | None = None) -> list[str]:
    """Names of the registered models, sorted by name; `pattern` is a glob (fnmatch) on the name.

    The choices of ``zoo list``: `sort` = ``"name"``, ``"params"`` (smallest first), ``"task"`` or a metric of
    the default weights, best first (``"top1"``, ``"map"`` highest first; ``"fid"``, ``"bits_per_dim"`` lowest
    first), models without it last; `max_params` = at most this many parameters (``5_000_000`` or ``"5M"``);
    `dataset` = the default weights have a figure on this dataset; `license` = the card's or the default weights'
    license identifier (both case-insensitive, globs allowed). A bad `sort` or `max_params` raises ZooError.

    Example:
        >>> zoo.list_models("resnet*", task="classifier", pretrained=True)
        >>> zoo.list_models(task="classifier", max_params="1M", sort="top1", dataset="cifar10")[0]
        'resnet56-cifar'
    """
    registry = get_registry()
    return [registry.display_name(c) for c in registry.select(pattern, task=task, plugin=plugin,
                                                               pretrained=pretrained, sort=sort,
                                                               max_params=max_params, dataset=dataset,
                                                               license=license)]


def fetch(name: str) -> Path:
    """Download (or find in a mirror), verify and convert the weights of `name[.tag]`; return the file.

    Raises:
        UnknownModelError: no such model or tag.
        WeightsError: the model has no weights, or they could not be fetched or verified.
    """
    return _fetch_resolved(get_registry().resolve(name))


def _fetch_resolved(resolved: Resolved) -> Path:
    variant = resolved.variant
    if variant is None:
        raise WeightsError(f"Model {resolved.card.name!r} has no pretrained weights; "
                           f"use zoo.load({resolved.card.name!r}, pretrained=False) for random init.")
    return Store().resolve(variant, model=resolved.card.name)


def load(name: str, pretrained: bool = True, device: str | torch.device | None = None,
         dtype: str | torch.dtype | None = None, **overrides: Any) -> nn.Module:
    """Build a model by name, with verified weights, on the best device, in eval mode.

    Args:
        name: ``name``, ``name.tag``, ``plugin/name`` or ``plugin/name.tag``.
        pretrained: load the card's weights (downloaded and verified on first use).
        device: ``"cpu"``, ``"cuda:1"``...; default: cuda, then mps, then cpu.
        dtype: e.g. ``"float16"``; default: torch's default float dtype.
        **overrides: builder keyword arguments that replace the card's, e.g. ``num_classes=5`` (the
            card's head then starts from fresh initialisation; everything else is loaded).

    Example:
        >>> model = zoo.load("resnet56-cifar")
        >>> model.training
        False
    """
    from ._builder import build_model
    from .runtime.device import check_device

    resolved = get_registry().resolve(name)
    check_device(device)  # before fetching weights: "cuda" on a CPU-only machine is one line, not a traceback
    for attempt in range(2):
        path = _fetch_resolved(resolved) if pretrained else None
        try:
            return build_model(resolved.card, path, device=device, dtype=dtype, overrides=overrides)
        except Exception:
            # another process ran `zoo cache rm` between verifying the file and reading it (the soak in
            # bench/soak/ found this race): fetch it again once, then say so in one line
            if path is None or path.exists():
                raise
            if attempt == 1:
                raise WeightsError(f"The weights of {name!r} were removed from the cache while loading (another "
                                   "process ran 'zoo cache rm'?); run the command again.") from None
    raise AssertionError("unreachable")


def transforms(name: str) -> v2.Compose:
    """The eval preprocessing of `name` as a torchvision.transforms.v2 pipeline."""
    from ._transforms import eval_transforms

    return eval_transforms(card(name))


def predict(name: str, images: str | Path | list[str | Path], **options: Any) -> list[dict[str, Any]]:
    """Predict with model `name` on one image file or a list: one record per image, the task's fields (classes and
    probabilities for a classifier, boxes for a detector). Options are the runtime's (``device``, ``precision``
    — "auto" by default, as on the command line —, ``skip_bad``, ``out``) and the task's (``topk=3``;
    ``conf=0.5, iou=0.45, max_det=100``).

    Example:
        >>> zoo.predict("fastestdet-coco", "examples/images/chelsea.png", conf=0.5)[0]["detections"][0]["label"]
        'cat'
    """
    from .runtime.predict import predict as run_predict

    options.setdefault("precision", "auto")  # as `zoo predict`: bf16 where the device has native bf16
    return run_predict(name, [images] if isinstance(images, (str, Path)) else list(images), **options)


def evaluate(name: str, data: str | Path, **options: Any) -> dict[str, Any]:
    """Evaluate model `name` on a dataset of its task, as ``zoo eval --json`` does; returns that record (metrics
    under ``"metrics"``, the headline named under ``"headline"``). Options: ``split``, ``val_split``, ``seed``,
    ``precision``, ``device``, ``batch_size`` and the task's own."""
    from .runtime.evaluate import evaluate as run_evaluate

    options.setdefault("show_progress", False)
    options.setdefault("precision", "auto")  # as `zoo eval`: bf16 where the device has native bf16
    return run_evaluate(name, data, **options).as_dict()


def export(name: str, path: str | Path, format: str | None = None, *, dynamic_batch: bool = False,
           opset: int | None = None, images: list[str | Path] | None = None,
           tolerance: float | None = None) -> dict[str, Any]:
    """Export model `name`'s network to `path` as ONNX (``format="onnx"``) or a torch.export ExportedProgram
    (``"exported-program"``; default: from the suffix, ``.pt2``, else ONNX), as ``zoo export --json`` does; returns
    that record: files, opset, input and outputs, what the graph leaves out (a detector's decoding and NMS), and
    ``check``: the largest absolute difference from eager PyTorch on real images (``images``; default the
    checkout's examples/images), run in onnxruntime or after ``torch.export.load``. `dynamic_batch`: any batch size
    (else 1). A failed check, or any refusal, raises ZooError and writes nothing. Details:
    :func:`zoo.runtime.export.export`.

    Example:
        >>> zoo.export("resnet18-cifar", "r18.onnx", dynamic_batch=True)["check"]["max_abs_diff"] < 1e-3
        True
    """
    from .runtime.export import export as run_export

    return run_export(name, path, format, dynamic_batch=dynamic_batch, opset=opset, images=images,
                      tolerance=tolerance).as_dict()


def explain(name: str, images: str | Path | list[str | Path], target: str | int | list[str | int] | None = None, *,
            layer: str | None = None, method: str = "gradcam", out: str | Path | None = None,
            device: str | torch.device | None = None) -> list[dict[str, Any]]:
    """Grad-CAM for classifier `name` on `images`, as ``zoo explain`` computes it: one record per image with the
    class explained (``class``, ``index``, ``probability``; `target` a name or an index, one per image or one for
    all, default each image's top-1), ``top1``, the ``layer`` used and ``heatmap``: a float32 H x W tensor in
    [0, 1] over the original image. `layer`: a module path of the model (default: the card's
    ``task_config.explain_layer``, else found automatically). With `out`, an overlay PNG per image is written
    there (``file``). Details: :func:`zoo.runtime.explain.explain`.

    Example:
        >>> r = zoo.explain("resnet18-cifar", "examples/images/chelsea.png")[0]
        >>> r["class"], r["heatmap"].shape
        ('cat', torch.Size([300, 451]))
    """
    from .runtime.explain import explain as run_explain

    return run_explain(name, images, target, layer=layer, method=method, out=out,
                       device=str(device) if device is not None else None)


def sample(name: str, n: int, seed: int = 0, labels: str | int | list[str | int] | None = None, *,
           batch_size: int | None = None, device: str | torch.device | None = None, precision: str = "auto",
           **task_options: Any) -> torch.Tensor:
    """`n` new images from generative model `name` (a GAN, a VAE...): float32 N x C x H x W in [0, 1], on the
    CPU, as ``zoo sample`` draws them. Sample i comes from its own generator, seeded ``blake2b(seed:index)``: the
    same seed gives the same images whatever `batch_size`. `labels` (class-conditional models): None (drawn
    uniformly from the seed), one class name or index for every sample, or one per sample. `task_options` are
    the task's own. Details: :func:`zoo.runtime.sample.sample`.

    Example:
        >>> zoo.sample("cgan-cifar", 16, seed=0, labels="cat").shape
        torch.Size([16, 3, 32, 32])
    """
    from .runtime.sample import sample as run_sample

    return run_sample(name, n, seed, labels, batch_size=batch_size, device=device, precision=precision,
                      **task_options)


def finetune(name: str, data: str | Path, out: str | Path, **recipe: Any) -> Any:
    """Fine-tune model `name` on `data` as ``zoo finetune`` does; `recipe` holds FinetuneConfig's fields
    (``epochs=30``, ``batch_size=16``...). The result loads as ``zoo.load(Path(out).name)``."""
    from .runtime.device import check_device
    from .runtime.finetune import FinetuneConfig
    from .runtime.finetune import finetune as run_finetune

    check_device(recipe.get("device"))
    runtime = {k: recipe.pop(k) for k in ("resume", "device", "show_progress", "checkpoint_every") if k in recipe}
    return run_finetune(name, data, out, config=FinetuneConfig(**recipe), **runtime)
