"""The public functions behind `import zoo`. Torch is imported inside the functions that need it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._card import ModelCard
from ._registry import Resolved, get_registry
from ._store import Store
from .errors import WeightsError, ZooError

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch
    from torch import nn
    from torchvision.transforms import v2

__all__ = [
    "card",
    "ensemble",
    "evaluate",
    "explain",
    "export",
    "fetch",
    "finetune",
    "list_models",
    "load",
    "predict",
    "register",
    "sample",
    "transforms",
]


def card(name: str) -> ModelCard:
    """The model card for `name` (metadata only: no torch, no model code).

    Example:
        >>> zoo.card("resnet56-cifar").labels[:2]
        ('airplane', 'automobile')
        >>> zoo.card("ensemble:resnet56-cifar+resnet44-cifar").kwargs
        {'members': ['resnet56-cifar', 'resnet44-cifar']}
    """
    from .runtime import ensemble

    if ensemble.is_ensemble(name):
        return ensemble.card_for(name)
    return get_registry().card(name)


def list_models(
    pattern: str | None = None,
    *,
    task: str | None = None,
    plugin: str | None = None,
    pretrained: bool = False,
    sort: str | None = None,
    max_params: int | str | None = None,
    dataset: str | None = None,
    license: str | None = None,
) -> list[str]:
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
    return [
        registry.display_name(c)
        for c in registry.select(
            pattern,
            task=task,
            plugin=plugin,
            pretrained=pretrained,
            sort=sort,
            max_params=max_params,
            dataset=dataset,
            license=license,
        )
    ]


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
        raise WeightsError(
            f"Model {resolved.card.name!r} has no pretrained weights; "
            f"use zoo.load({resolved.card.name!r}, pretrained=False) for random init."
        )
    return Store().resolve(variant, model=resolved.card.name)


def load(
    name: str,
    pretrained: bool = True,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    **overrides: Any,
) -> nn.Module:
    """Build a model by name, with verified weights, on the best device, in eval mode.

    Args:
        name: ``name``, ``name.tag``, ``plugin/name`` or ``plugin/name.tag``; for classifiers also
            ``ensemble:a+b[+c...]`` (see :func:`ensemble`).
        pretrained: load the card's weights (downloaded and verified on first use).
        device: ``"cpu"``, ``"cuda:1"``...; default: cuda, then mps, then cpu.
        dtype: e.g. ``"float16"``; default: torch's default float dtype.
        **overrides: builder keyword arguments that replace the card's, e.g. ``num_classes=5`` (the
            card's head then starts from fresh initialisation; everything else is loaded). Two are zoo's own,
            as in timm: ``num_classes=0`` loads every weight and replaces the head (the card's ``head``) by an
            identity, so the model returns its pooled features (N x 64 for the CIFAR ResNet-20..56);
            ``features_only=True`` returns the list of the feature maps of the network's stages (timm's own
            feature networks for ``timm/...`` models; models whose builders declare ``feature_stages``; others are
            refused naming the cards that do).

    Example:
        >>> model = zoo.load("resnet56-cifar")
        >>> model.training
        False
        >>> zoo.load("resnet20-cifar", num_classes=0)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 64])
    """
    from .runtime import ensemble
    from .runtime.device import check_device

    registry = get_registry()
    resolved = None if ensemble.is_ensemble(name) else registry.resolve(name)
    card_ = ensemble.card_for(name) if resolved is None else resolved.card
    check_device(device)  # before fetching weights: "cuda" on a CPU-only machine is one line, not a traceback
    if ensemble.is_ensemble(card_):
        if overrides:
            raise ZooError(
                f"Ensemble {name!r} takes no builder overrides (got {', '.join(sorted(overrides))}); "
                "load its members for that."
            )
        return ensemble.build_ensemble(
            members=ensemble.members_of(card_), pretrained=pretrained, device=device, dtype=dtype
        )
    assert resolved is not None
    features_only = bool(overrides.pop("features_only", False))
    pooled = "num_classes" in overrides and overrides["num_classes"] == 0
    if pooled:
        del overrides["num_classes"]  # every weight loads, the head included; it is taken off afterwards
        if features_only:
            raise ZooError("Pass num_classes=0 (pooled features) or features_only=True (feature maps), not both.")
    make_features = _feature_maker(card_) if features_only else None  # refused before any weights are fetched
    model = _load_resolved(resolved, name, pretrained, device, dtype, overrides)
    if pooled:
        model = _without_head(model, card_)
    if make_features is not None:
        model = make_features(model, {**card_.kwargs, **overrides})
    return model


def _load_resolved(
    resolved: Resolved,
    name: str,
    pretrained: bool,
    device: str | torch.device | None,
    dtype: str | torch.dtype | None,
    overrides: dict[str, Any],
) -> nn.Module:
    from ._builder import build_model

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
                raise WeightsError(
                    f"The weights of {name!r} were removed from the cache while loading (another "
                    "process ran 'zoo cache rm'?); run the command again."
                ) from None
    raise AssertionError("unreachable")


def _without_head(model: nn.Module, card_: ModelCard) -> nn.Module:
    """timm's ``num_classes=0``: the model's own ``reset_classifier(0)`` (timm models), else the card's ``head``
    module replaced by an identity, so the output is what the head was given: the pooled features."""
    from torch import nn

    if callable(getattr(model, "reset_classifier", None)):
        model.reset_classifier(0)  # type: ignore[operator]  # timm's method, checked callable above
        return model
    if not card_.head:
        raise ZooError(
            f"Model {card_.name!r} names no head on its card ('head:'), so num_classes=0 cannot take it "
            "off; load it whole."
        )
    parent_name, _, attr = card_.head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Identity())
    return model


def _feature_maker(card_: ModelCard) -> Callable[[nn.Module, dict[str, Any]], nn.Module]:
    """How `card_`'s loaded model becomes its feature network (``features_only=True``), known before any weights
    are fetched: the builder's own ``features_only(model, **kwargs)`` (timm's wrappers, for the timm bridge), or
    the ``feature_stages`` it declares; else one ZooError naming the models that support it."""
    from ._builder import check_trusted, import_builder

    def maker(card: ModelCard) -> Callable[[nn.Module, dict[str, Any]], nn.Module] | None:
        try:
            check_trusted(card)  # never import a module the user did not trust, not even to list it
            builder = import_builder(card.builder, model=card.name)
        except ZooError:
            return None
        own = getattr(builder, "features_only", None)
        if callable(own):
            return lambda model, kwargs: own(model, **kwargs)
        stages = tuple(getattr(builder, "feature_stages", None) or ())
        if stages:
            return lambda model, kwargs: _stage_features(model, stages)
        return None

    found = maker(card_)
    if found is not None:
        return found
    registry = get_registry()
    able = sorted(registry.display_name(c) for c in registry.cards if c.builder != card_.builder and maker(c))
    raise ZooError(
        f"Model {card_.name!r} does not support features_only=True (its builder declares neither "
        f"features_only nor feature_stages); the models that do: {', '.join(able) or 'none'}. "
        "num_classes=0 gives pooled features for any model with a head."
    )


def _stage_features(model: nn.Module, stages: tuple[str, ...]) -> nn.Module:
    """timm's ``features_only``: a module returning the list of the feature maps of `stages`, made with
    torchvision's ``create_feature_extractor`` (an fx graph of the model up to the last stage)."""
    from torch import nn
    from torchvision.models.feature_extraction import create_feature_extractor

    extractor = create_feature_extractor(model, return_nodes=list(stages))

    class FeatureMaps(nn.Module):
        """The feature maps of `stages`, in order, as a list (timm's features_only convention)."""

        def __init__(self, graph: nn.Module, names: tuple[str, ...]) -> None:
            super().__init__()
            self.graph, self.stages = graph, names

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            out = self.graph(x)
            return [out[name] for name in self.stages]

    return FeatureMaps(extractor, stages).eval()


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
    under ``"metrics"``, the headline named under ``"headline"``). Options: ``split``, ``val_split``, ``test_split``
    (with ``val_split``: only the test images ``zoo finetune`` held out), ``seed``, ``precision``, ``device``,
    ``batch_size`` and the task's own. For an ensemble (``ensemble:a+b`` or a saved one) the record also holds
    ``"ensemble"``: each member's headline figure on the same images, the best member and the ensemble's gain
    over it."""
    from .runtime.ensemble import evaluate_ensemble, is_ensemble
    from .runtime.evaluate import evaluate as run_evaluate

    options.setdefault("show_progress", False)
    options.setdefault("precision", "auto")  # as `zoo eval`: bf16 where the device has native bf16
    if is_ensemble(card(name)):  # each member measured too, under "ensemble" (see zoo.runtime.ensemble)
        result, members = evaluate_ensemble(name, data, **options)
        return {**result.as_dict(), "ensemble": members}
    return run_evaluate(name, data, **options).as_dict()


def export(
    name: str,
    path: str | Path,
    format: str | None = None,
    *,
    dynamic_batch: bool = False,
    opset: int | None = None,
    images: list[str | Path] | None = None,
    tolerance: float | None = None,
) -> dict[str, Any]:
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

    return run_export(
        name, path, format, dynamic_batch=dynamic_batch, opset=opset, images=images, tolerance=tolerance
    ).as_dict()


def explain(
    name: str,
    images: str | Path | list[str | Path],
    target: str | int | list[str | int] | None = None,
    *,
    layer: str | None = None,
    method: str = "gradcam",
    out: str | Path | None = None,
    device: str | torch.device | None = None,
) -> list[dict[str, Any]]:
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

    return run_explain(
        name, images, target, layer=layer, method=method, out=out, device=str(device) if device is not None else None
    )


def sample(
    name: str,
    n: int,
    seed: int = 0,
    labels: str | int | list[str | int] | None = None,
    *,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    precision: str = "auto",
    **task_options: Any,
) -> torch.Tensor:
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

    return run_sample(name, n, seed, labels, batch_size=batch_size, device=device, precision=precision, **task_options)


def finetune(name: str, data: str | Path, out: str | Path, **recipe: Any) -> Any:
    """Fine-tune model `name` on `data` as ``zoo finetune`` does; `recipe` holds FinetuneConfig's fields
    (``epochs=30``, ``batch_size=16``, ``val_split=0.1, test_split=0.1``...). The result loads as
    ``zoo.load(Path(out).name)``; with ``test_split`` its ``test_value`` (and its card) holds the chosen weights'
    figure on test images nothing selected on."""
    from .runtime.device import check_device
    from .runtime.finetune import FinetuneConfig
    from .runtime.finetune import finetune as run_finetune

    check_device(recipe.get("device"))
    runtime = {k: recipe.pop(k) for k in ("resume", "device", "show_progress", "checkpoint_every") if k in recipe}
    return run_finetune(name, data, out, config=FinetuneConfig(**recipe), **runtime)


def ensemble(
    members: list[str],
    *,
    save_as: str | None = None,
    description: str | None = None,
    pretrained: bool = True,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> nn.Module:
    """The ensemble of classifiers `members`: a module whose output is ``log(mean of the members' softmax
    probabilities)``, valid logits for everything the classifier task does (a softmax of them gives back the mean
    probabilities). Same as ``zoo.load("ensemble:a+b")``. The members must share labels (same order) and input
    geometry; each is loaded with its own verified weights. ``save_as``: also save it as a user card of that
    name (as ``zoo register NAME --from 'ensemble:a+b'``), loadable as ``zoo.load(NAME)``.

    Example:
        >>> m = zoo.ensemble(["resnet56-cifar", "resnet44-cifar"])
        >>> m(torch.zeros(1, 3, 32, 32)).softmax(1).sum().item()
        1.0
    """
    from .runtime import ensemble as ens

    name = ens.PREFIX + "+".join(members)
    ens.parse_name(name)
    if save_as is not None:
        register(save_as, from_=name, description=description)
    return load(name, pretrained=pretrained, device=device, dtype=dtype)


def register(
    name: str,
    from_: str,
    weights: str | Path | None = None,
    *,
    labels: list[str] | None = None,
    description: str | None = None,
    copy: bool = False,
    overwrite: bool = False,
) -> ModelCard:
    """Add card `name` to your registry ($ZOO_HOME/registry.yaml), as ``zoo register`` does; returns it.

    `from_` names the card whose builder, preprocessing and task the new one takes. `weights`: a safetensors
    file, pinned by its sha256 and size and checked to load into that architecture (with `labels`: one head
    output per label) before anything is written. The card names the file where it is, relative to the registry's
    folder when it lies inside it (the pair moves together), else by its absolute path; with `copy`, the file is
    copied to ``$ZOO_HOME/registered/NAME.safetensors`` first, so the card survives moving or deleting the
    original. An ``ensemble:a+b`` source takes no weights: the card saves the ensemble. An existing user card
    of that name is replaced only with `overwrite`. Any refusal raises ZooError and writes nothing.

    Example:
        >>> zoo.register("my-net", from_="resnet20-cifar", weights="my.safetensors").weights["local"].size
        1082308
    """
    from ._registry import reset_registry
    from .runtime import ensemble as ens
    from .runtime.train.usercard import add_user_entry, check_name, user_registry

    check_name(name, "name")
    registry = get_registry()
    if not overwrite and any(c.plugin == "user" for c in registry.by_short.get(name, [])):
        raise ZooError(f"Model {name!r} is already in your registry; pass --overwrite (overwrite=True) to replace it.")
    source = card(from_)
    if ens.is_ensemble(source):
        if weights is not None or labels:
            raise ZooError(
                f"{from_!r} is an ensemble: its members bring their own weights and labels; register it "
                "without --weights and --labels."
            )
        add_user_entry(name, ens.saved_entry(source, description), by="zoo register")
    else:
        if weights is None:
            raise ZooError(
                f"Registering a model from {from_!r} needs --weights FILE.safetensors (only an ensemble: "
                "source needs none)."
            )
        entry = _registered_entry(name, source, Path(weights), labels, description, copy)
        try:
            add_user_entry(name, entry, by="zoo register")
        except BaseException:
            if copy:  # the copy made for this card goes with it
                (user_registry().parent / "registered" / f"{name}.safetensors").unlink(missing_ok=True)
            raise
    reset_registry()
    return get_registry().card(f"user/{name}")


def _registered_entry(
    name: str, source: ModelCard, weights: Path, labels: list[str] | None, description: str | None, copy: bool
) -> dict[str, Any]:
    """The user-registry entry for `weights` in `source`'s architecture, after checking that they load into it;
    with `copy`, the file is copied into ZOO_HOME (and removed again if anything fails)."""
    import dataclasses
    import hashlib
    import os
    import shutil

    from ._builder import build_model
    from .runtime.ensemble import _plain
    from .runtime.train.usercard import user_registry, weights_uri

    if not weights.is_file():
        raise ZooError(f"Weights file not found: {weights}.")
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as f:
            dtypes = {str(f.get_slice(k).get_dtype()).lower() for k in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for anything but a header
        raise ZooError(
            f"{weights} is not a safetensors file ({str(exc).splitlines()[0][:120]}); convert a "
            "checkpoint with 'zoo convert CHECKPOINT OUT.safetensors'."
        ) from None
    new_labels = tuple(labels) if labels else source.labels
    if labels and len(set(labels)) != len(labels):
        raise ZooError(f"--labels names a class twice: {', '.join(labels)}.")
    kwargs = dict(source.kwargs)
    if labels and tuple(labels) != source.labels:
        if "num_classes" not in kwargs and not source.head:
            raise ZooError(f"Model {source.name!r} has no num_classes to set for --labels; register it without.")
        kwargs["num_classes"] = len(labels)
    dtype = "bfloat16" if "bf16" in dtypes else "float16" if "f16" in dtypes else "float32"
    candidate = dataclasses.replace(
        source, name=name, plugin="user", kwargs=kwargs, labels=new_labels, weights={}, default_tag=None
    )
    try:
        model = build_model(candidate, weights, device="cpu")
    except ZooError as exc:
        hint = (
            " Its head has another size than the card's labels: pass --labels a,b,c."
            if "shape differs" in str(exc) and not labels
            else ""
        )
        raise ZooError(f"{exc}{hint} No card written.") from None
    params = sum(p.numel() for p in model.parameters())
    del model
    registry = user_registry()
    path = weights.resolve()
    copied: Path | None = None
    if copy:
        copied = registry.parent / "registered" / f"{name}.safetensors"
        copied.parent.mkdir(parents=True, exist_ok=True)
        partial = copied.with_name(copied.name + ".partial")
        shutil.copyfile(path, partial)
        os.replace(partial, copied)
        path = copied
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    pre = source.preprocess
    entry: dict[str, Any] = {
        "task": source.task,
        "builder": source.builder,
        "kwargs": kwargs or None,
        "description": description or f"{source.name}'s architecture with the weights {weights.name} (zoo register).",
        "input": {"shape": list(source.input_shape)} if source.input_shape else None,
        "preprocess": _plain(dataclasses.asdict(pre)) if pre else None,
        "labels": list(new_labels) or None,
        "task_config": _plain(dict(source.task_config)) or None,
        "head": source.head,
        "params": params,
        "license": source.license,
        "source": f"zoo register from {source.qualified_name}",
        "weights": {
            "local": {
                "uri": weights_uri(path, registry),
                "sha256": digest,
                "size": path.stat().st_size,
                "format": "safetensors",
                "dtype": dtype,
                "notes": f"registered from {path if copied is None else weights.resolve()}",
            }
        },
    }
    return {k: v for k, v in entry.items() if v is not None}
