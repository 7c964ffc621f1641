"""Build the index of torchvision's pretrained classifiers and detectors from torchvision's own metadata
(imports torch).

    python -m zoo_torchvision.index            # (re)build the index for the installed torchvision

Detectors (``torchvision.models.detection``: ``tv/fasterrcnn_resnet50_fpn_v2.COCO_V1``) get the cards of the
built-in COCO detectors, from the same generator (``zoo_detector.torchvision_cards.detector_card``) and built by
the same builder (``zoo_detector.torchvision_models``); the architectures that builder does not build (Mask
R-CNN's masks, Keypoint R-CNN's keypoints) are listed in the index's ``skipped`` with the reason.

Classifiers: one card per weights enum member (``ResNet50_Weights.IMAGENET1K_V2`` -> ``tv/resnet50.imagenet1k_v2``),
since members of one architecture differ in preprocessing, metrics and builder arguments. Everything on a card
comes from torchvision:

* builder: torchvision's own function (``torchvision.models:resnet50``) with the keyword arguments its builder
  sets when given these weights (``num_classes``, ``image_size``, ``aux_logits``...). They are recorded by running
  the builder with the weights on the meta device, its ``_ovewrite_named_param`` calls watched and the download
  replaced by a sentinel (no bytes are fetched); the card's arguments are then checked to rebuild the same
  state-dict layout.
* weights: the URL, and the sha256 prefix the file name carries (``-0676ba61.pth``: what torch.hub checks; zoo
  records the full hash on the first verified download, docs/architecture.md §5). A plain state-dict pickle,
  converted once through ``torch.load(weights_only=True)``.
* preprocessing: the resize, crop, interpolation, mean and std of the member's ``transforms``.
* metrics: ``_metrics`` (acc@1 / acc@5 on ImageNet-1K as ``top1`` / ``top5``), published, the recipe as reference.
* params (``num_params``), labels (``categories``), head (the last layer with one output per category),
  description (the builder's docstring and the member's ``_docs``), license.
"""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path
from typing import Any, Final

# the detector cards' generator already reads torchvision's docstrings and file names: one reading of them
from zoo_detector.torchvision_cards import LINK_RE, detector_card, rst_text, sha256_prefix

__all__ = ["build_index", "detector_names", "model_names", "weights_card", "write_index"]

CODE_LICENSE: Final = "BSD-3-Clause (torchvision)"
WEIGHTS_LICENSE: Final = "BSD-3-Clause (torchvision; weights: see the recipe)"
METRIC_NAMES: Final = {"acc@1": "top1", "acc@5": "top5"}
DATASETS: Final = {"ImageNet-1K": ("imagenet1k", "val")}
# a detection metric -> what else the model predicts besides boxes (zoo's detector task takes boxes only)
EXTRA_OUTPUTS: Final = {"mask_map": "instance masks", "kp_map": "keypoints"}


class _Built(Exception):  # noqa: N818 - a control-flow signal, not an error
    def __init__(self, model: Any) -> None:
        self.model = model


class _Sentinel(dict):
    """Stands for the downloaded state dict: empty, so a builder that renames keys first (densenet) renames none."""


# torchvision's densenet checkpoints keep the old 'norm.1' / 'conv.1' keys and its builder renames them in code
# (densenet._load_state_dict), not in metadata: the same regex, as the card's conversion rule.
DENSENET_RENAME: Final = {
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|"
    r"running_var))$": r"\1\2"
}


def model_names() -> list[str]:
    """torchvision's classification architectures that have pretrained weights (``list_models`` of the top-level
    ``torchvision.models``: detection, segmentation, video and quantized models live in submodules)."""
    import torchvision.models as models

    return sorted(models.list_models(module=models))


def detector_names() -> list[str]:
    """torchvision's detection architectures (``list_models`` of ``torchvision.models.detection``), the ones zoo
    cannot run included: they are named in the index's ``skipped``."""
    import torchvision.models as models
    from torchvision.models import detection

    return sorted(models.list_models(module=detection))


def _unsupported(arch: str, weights: Any) -> str | None:
    """Why the detector task cannot run `arch` with `weights`, or None when it can."""
    from zoo_detector.torchvision_models import ARCHS

    if arch in ARCHS:
        return None
    extra = [
        what for key, what in EXTRA_OUTPUTS.items() for values in weights.meta["_metrics"].values() if key in values
    ]
    if extra:
        return (
            f"predicts {' and '.join(dict.fromkeys(extra))} besides boxes: zoo's detector task takes boxes only, and "
            "zoo_detector.torchvision_models does not build it"
        )
    return "zoo_detector.torchvision_models does not build it (yet)"


def _labels_key(label_sets: dict[str, list[str]], labels: list[str], name: str) -> str:
    """The key of `labels` in the index's label sets (kept once, named by the cards); new ones are added under
    `name`, or ``set<N>`` if that is taken."""
    key = next((k for k, v in label_sets.items() if v == labels), None)
    if key is None:
        key = name if name not in label_sets else f"set{len(label_sets)}"
        label_sets[key] = labels
    return key


def _text(text: str) -> str:
    return rst_text(inspect.cleandoc(text or ""))


def _builder_kwargs(function: Any, weights: Any) -> tuple[dict[str, Any], Any]:
    """(the keyword arguments torchvision's builder sets for `weights`, the model it builds), on the meta device."""
    import torch
    import torchvision.models
    from torchvision.models import _api

    recorded: dict[str, Any] = {}
    patched = []
    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "") or ""
        original = getattr(module, "_ovewrite_named_param", None)
        if name.startswith("torchvision.models") and callable(original):

            def record(kwargs: dict, param: str, new_value: Any, _original: Any = original) -> None:
                recorded[param] = new_value
                _original(kwargs, param, new_value)

            patched.append((module, original))
            module._ovewrite_named_param = record  # type: ignore[attr-defined]  # found by getattr above
    saved_get, saved_load = _api.WeightsEnum.get_state_dict, torch.nn.Module.load_state_dict

    def fake_load(self: Any, state_dict: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(state_dict, _Sentinel):
            raise _Built(self)
        return saved_load(self, state_dict, *args, **kwargs)

    # monkeypatched for the build only, restored below
    _api.WeightsEnum.get_state_dict = lambda self, *a, **k: _Sentinel()  # type: ignore[method-assign]
    torch.nn.Module.load_state_dict = fake_load  # type: ignore[method-assign]
    try:
        _build_empty(function, weights=weights)
    except _Built as built:
        model = built.model
    else:
        raise RuntimeError(f"torchvision.models.{function.__name__} did not load {weights}")
    finally:
        _api.WeightsEnum.get_state_dict, torch.nn.Module.load_state_dict = (  # type: ignore[method-assign]
            saved_get,
            saved_load,
        )
        for module, original in patched:
            module._ovewrite_named_param = original  # type: ignore[attr-defined]
    assert getattr(torchvision.models, function.__name__) is function
    return recorded, model


def _build_empty(function: Any, **kwargs: Any) -> Any:
    """`function(**kwargs)` without memory or initialisation: on the meta device, or, for builders that read
    tensor values while constructing (regnet's block widths), with parameters made uninitialised on the CPU and
    moved to meta one by one (as accelerate's init_empty_weights does)."""
    import torch
    from torch import nn

    try:
        with torch.device("meta"):
            return function(**kwargs)
    except NotImplementedError:
        pass
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved_init = {n: getattr(nn.init, n) for n in names}
    saved_register = nn.Module.register_parameter

    def register(self: Any, name: str, param: Any) -> None:
        saved_register(self, name, param)
        if param is not None and param.device.type != "meta":
            self._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    for n in names:
        setattr(nn.init, n, lambda tensor, *a, **k: tensor)
    nn.Module.register_parameter = register  # type: ignore[method-assign]  # monkeypatched, restored below
    try:
        return function(**kwargs)
    finally:
        nn.Module.register_parameter = saved_register  # type: ignore[method-assign]
        for n, f in saved_init.items():
            setattr(nn.init, n, f)


def _head(model: Any, num_classes: int) -> str:
    """The last Linear or Conv2d with one output per class: the layer `num_classes=K` re-shapes."""
    from torch import nn

    found = [
        name
        for name, m in model.named_modules()
        if (isinstance(m, nn.Linear) and m.out_features == num_classes)
        or (isinstance(m, nn.Conv2d) and m.out_channels == num_classes)
    ]
    if not found:
        raise ValueError(f"{type(model).__name__}: no layer with {num_classes} outputs")
    return found[-1]


def _layout(model: Any) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def weights_card(arch: str, weights: Any, labels_key: str) -> dict[str, Any]:
    """The card of one weights enum member (labels by reference to the index's label sets)."""
    import torchvision.models as models

    function = getattr(models, arch)
    kwargs, model = _builder_kwargs(function, weights)
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}  # maxvit's input_size
    for key, value in [(k, x) for k, v in kwargs.items() for x in (v if isinstance(v, list) else [v])]:
        if not isinstance(value, (bool, int, float, str)) and value is not None:
            raise ValueError(f"{arch} {weights}: builder argument {key}={value!r} is not a plain value")
    again = _build_empty(function, **kwargs)
    if _layout(again) != _layout(model):
        raise ValueError(f"{arch}(**{kwargs}) does not rebuild the layout of {weights}")
    meta = weights.meta
    transform = weights.transforms()
    crop, resize = int(transform.crop_size[0]), int(transform.resize_size[0])
    interpolation = str(getattr(transform.interpolation, "value", transform.interpolation)).lower()
    enum_name = f"{type(weights).__name__}.{weights.name}"
    metrics = []
    for dataset_key, values in meta.get("_metrics", {}).items():
        dataset, split = DATASETS.get(dataset_key, (dataset_key.lower(), "val"))
        for metric, value in values.items():
            metrics.append(
                {
                    "name": METRIC_NAMES.get(metric, metric),
                    "value": value,
                    "dataset": dataset,
                    "split": split,
                    "source": "published",
                    "reference": meta["recipe"],
                    "note": f"torchvision's {enum_name} meta ({dataset_key} {metric})",
                }
            )
    doc = inspect.cleandoc(function.__doc__ or "").split("Args:")[0]
    paragraphs = [p for p in re.split(r"\n\s*\n", doc) if p.strip() and not p.strip().startswith("..")]
    summary = _text(paragraphs[0]) if paragraphs else ""
    papers = [f"{' '.join(title.split())} ({url})" for title, url in LINK_RE.findall(doc)]
    extra = _text(meta.get("_docs", ""))
    notes = (
        f"torchvision's {enum_name}: a plain state dict ({meta.get('_file_size', 0):g} MB pickle, "
        f"{meta.get('_ops', 0):g} GFLOPS), converted to safetensors on fetch. torchvision publishes only the "
        "sha256 prefix in the file name; zoo records the full hash on the first verified download."
    )
    tag = weights.name.lower()
    return {
        "task": "classifier",
        "description": " ".join(p for p in (summary, extra) if p),
        "builder": f"torchvision.models:{arch}",
        "kwargs": kwargs,
        "input": {"shape": [3, crop, crop]},
        "preprocess": {
            "resize": resize,
            "crop": crop,
            "interpolation": interpolation,
            "mean": [float(v) for v in transform.mean],
            "std": [float(v) for v in transform.std],
        },
        "labels": labels_key,
        "head": _head(model, len(meta["categories"])),
        "params": meta["num_params"],
        "license": CODE_LICENSE,
        "source": f"https://pytorch.org/vision/stable/models/generated/torchvision.models.{arch}.html",
        "citation": "; ".join(dict.fromkeys(papers)) or None,
        "weights": {
            tag: {
                "uri": weights.url,
                "sha256_prefix": sha256_prefix(weights.url),
                "format": "torch-pickle",
                "dtype": "float32",
                "license": meta.get("license", WEIGHTS_LICENSE),
                **({"convert": {"rename": DENSENET_RENAME}} if arch.startswith("densenet") else {}),
                "metrics": metrics,
                "notes": notes,
            }
        },
    }


def build_index(names: list[str] | None = None, detectors: list[str] | None = None) -> dict[str, Any]:
    """The index (as stored) for the installed torchvision: every weights member of every architecture.

    Args:
        names: the classification architectures (default: ``model_names()``).
        detectors: the detection architectures (default: ``detector_names()``).
    """
    import torchvision
    import torchvision.models as models

    from ._paths import INDEX_FORMAT

    label_sets: dict[str, list[str]] = {}
    cards: dict[str, Any] = {}
    defaults: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for arch in names if names is not None else model_names():
        enum = models.get_model_weights(arch)
        for weights in enum:
            if not weights.meta.get("categories"):  # VGG16_Weights.IMAGENET1K_FEATURES: a backbone, no classifier
                skipped[f"{arch}.{weights.name}"] = "no categories (feature-extractor weights without a classifier)"
                continue
            labels = list(weights.meta["categories"])
            first = len(labels) == 1000 and not label_sets
            key = _labels_key(label_sets, labels, "imagenet1k" if first else f"set{len(label_sets)}")
            try:
                cards[f"{arch}.{weights.name.lower()}"] = weights_card(arch, weights, key)
            except Exception as exc:  # noqa: BLE001 - one odd member must not lose the others; it is recorded
                skipped[f"{arch}.{weights.name}"] = f"{type(exc).__name__}: {exc}"
        default = getattr(enum, "DEFAULT", None)
        if default is not None and f"{arch}.{default.name.lower()}" in cards:
            defaults[arch] = default.name.lower()
    for arch in detectors if detectors is not None else detector_names():
        enum = models.get_model_weights(arch)
        for weights in enum:
            why = _unsupported(arch, weights)
            if why is not None:
                skipped[f"{arch}.{weights.name}"] = why
                continue
            tag = weights.name.lower()
            try:
                card = detector_card(arch, weights.name, tag=tag)
            except Exception as exc:  # noqa: BLE001 - as for classifiers: recorded, the others kept
                skipped[f"{arch}.{weights.name}"] = f"{type(exc).__name__}: {exc}"
                continue
            card["labels"] = _labels_key(label_sets, card["labels"], "coco")
            cards[f"{arch}.{tag}"] = card
        default = getattr(enum, "DEFAULT", None)
        if default is not None and f"{arch}.{default.name.lower()}" in cards:
            defaults[arch] = default.name.lower()
    return {
        "format": INDEX_FORMAT,
        "torchvision": torchvision.__version__,
        "label_sets": label_sets,
        "defaults": defaults,
        "skipped": skipped,
        "models": cards,
    }


def write_index(path: Path, names: list[str] | None = None) -> dict[str, Any]:
    """Build the index and write it to `path` atomically; say so on stderr (it takes a while, once)."""
    from ._paths import announce, built, torchvision_version, write_json

    start = announce("torchvision", torchvision_version())
    data = build_index(names)
    write_json(path, data)
    built(data, "torchvision weights", path, start)
    return data


if __name__ == "__main__":
    from ._paths import index_path

    write_index(index_path())
