"""Explain a classifier's decision with Grad-CAM: which part of each image drove the score of one class.

Grad-CAM (Selvaraju et al., 2017) weighs a convolutional layer's feature maps by the mean gradient of the class
score over each map and keeps the positive sum: a coarse map of where the evidence for that class lies. The
computation is captum's (``LayerGradCam``, upsampled with ``LayerAttribution.interpolate``); this module decides
the layer, the class, and how the map is laid back over the picture.

* The task says which layer (``Task.explain_layer(model)``: the classifier reads its card's
  ``task_config.explain_layer``); ``layer=`` overrides it; with neither, :func:`find_layer` takes the last block
  that contains a Conv2d and returns a feature map, preferring maps of at least 7 x 7 (see there).
* The class is the top-1 per image unless ``target`` names one (a name or an index, as ``zoo sample --class``).
* The map covers what the model saw (the card's resize and center crop); it is mapped back through that geometry
  onto the original image, so the heat map and the overlay PNG have the original's size, and the parts the crop
  cut away are dimmed.
* Everything is checked before anything is written (the model's task, the images, the class, the layer); each
  PNG appears by a rename, whole or not at all.
"""

from __future__ import annotations

import difflib
import importlib.util
import itertools
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ZooError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .datasets import Geometry

__all__ = ["METHODS", "MIN_SIDE", "explain", "explainable_task", "find_layer", "layer_candidates"]

#: The attribution methods ``zoo explain --method`` offers.
METHODS = ("gradcam",)
#: The automatic layer prefers feature maps at least this many cells on their shorter side (see find_layer).
MIN_SIDE = 7
#: How strongly the heat map is blended over the picture (0: the picture only, 1: the colour map only).
ALPHA = 0.5
#: What is left of the parts of the picture the model did not see (the card's center crop cut them away).
DIM = 0.35


def explainable_task(card: Any) -> Any:
    """The task object for `card`, after checking that its task can explain (defines ``explain_layer``): one that
    cannot is one line naming the verbs it has."""
    from .tasks import task_for

    return task_for(card, "explain", "explain_layer")


# -- the layer ----------------------------------------------------------------------------------------------


@dataclass
class _Seen:
    name: str
    shape: tuple[int, ...]
    order: int  # when its forward returned (outer modules return after the modules inside them)
    has_conv: bool


def _survey(model: nn.Module, x: torch.Tensor) -> dict[str, _Seen]:
    """Every module that ran on `x`: the shape of what it returned and when it returned (one forward pass)."""
    import torch
    from torch import nn

    seen: dict[str, _Seen] = {}
    returned = itertools.count()
    has_conv = {name: any(isinstance(m, nn.Conv2d) for m in module.modules()) for name, module in model.named_modules()}

    def hook(name: str):  # noqa: ANN202
        def record(_module: nn.Module, _args: Any, output: Any) -> None:
            if isinstance(output, torch.Tensor):  # a module called twice keeps its last call
                seen[name] = _Seen(name, tuple(output.shape), next(returned), has_conv[name])

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules() if name]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def _spatial(item: _Seen) -> bool:
    return len(item.shape) == 4 and item.shape[2] * item.shape[3] > 1


def layer_candidates(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The modules Grad-CAM can attribute to, in the order their forward passes return: those that contain a
    Conv2d and return an N x C x H x W map larger than 1 x 1."""
    return [s.name for s in sorted(_survey(model, x).values(), key=lambda s: s.order) if s.has_conv and _spatial(s)]


def find_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The layer Grad-CAM uses when neither the card nor the caller names one.

    The usual choice is the last convolutional block before global pooling: the module that contains a Conv2d,
    returns a feature map (N x C x H x W, more than one cell) and whose forward returns last (a stage returns
    after its blocks, so the outermost one: ``layer4`` rather than ``layer4.1``). Its map has the last layer's
    semantics but only H x W cells, and on a 32 x 32 CIFAR network the last stage is 4 x 4 cells that each see
    the whole image: for resnet18-cifar's ``layer4`` the cat pasted into one quadrant of a grey canvas got 29%
    of the heat (25% is no information), ``layer3`` (8 x 8) 91-99% (tests/test_explain.py). So maps of at least
    :data:`MIN_SIDE` x :data:`MIN_SIDE` cells are preferred (an ImageNet network at 224 x 224 ends at 7 x 7 and
    keeps its last stage): the last such module, else the last one of any size.
    """
    found = [s for s in sorted(_survey(model, x).values(), key=lambda s: s.order) if s.has_conv and _spatial(s)]
    if not found:
        raise ZooError(
            "Found no convolutional layer that returns a feature map (N x C x H x W) to explain; name "
            "one with --layer MODULE.PATH (zoo.explain(..., layer=...))."
        )
    large = [s for s in found if min(s.shape[2], s.shape[3]) >= MIN_SIDE]
    return (large or found)[-1].name


def _shallow(names: list[str], limit: int = 8) -> list[str]:
    """A few of `names` worth showing, in the model's order: the outermost ones (``layer1``...``layer4``), and
    the next level in only while fewer than four are shown."""
    keep: list[str] = []
    for depth in sorted({n.count(".") for n in names}):
        if len(keep) >= 4:
            break
        keep += [n for n in names if n.count(".") == depth]
    return [n for n in names if n in keep[:limit]]


def _resolve_layer(model: nn.Module, x: torch.Tensor, path: str, where: str) -> str:
    """Check that `path` names a module of `model` that returns a feature map; one line when it does not."""
    modules = dict(model.named_modules())
    survey = _survey(model, x)
    usable = [s.name for s in sorted(survey.values(), key=lambda s: s.order) if _spatial(s)]
    listed = ", ".join(_shallow([n for n in usable if survey[n].has_conv])) or "none"
    if path not in modules or not path:
        close = difflib.get_close_matches(path, [n for n in modules if n], n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ZooError(f"{where} {path!r} is not a module of the model{hint}; layers to explain include: {listed}.")
    if path not in survey:
        raise ZooError(
            f"{where} {path!r} does not run in the model's forward pass (or returns no single tensor); "
            f"layers to explain include: {listed}."
        )
    shape = survey[path].shape
    if not _spatial(survey[path]):
        shown = " x ".join(["N", *map(str, shape[1:])])
        raise ZooError(
            f"{where} {path!r} returns {shown}, not a feature map (N x C x H x W); Grad-CAM needs a "
            f"convolutional layer: {listed}."
        )
    return path


# -- mapping back onto the picture ---------------------------------------------------------------------------


def _view(height: int, width: int, geometry: Geometry) -> tuple[int, int, int, int, int, int]:
    """Where the model's input lies in the image after the card's resize: (resized height, width, crop top, left,
    crop height, width), the offsets negative where the crop is larger than the image (torchvision pads). The
    arithmetic is torchvision's (``resize`` with one size, then ``center_crop``)."""
    rh, rw = height, width
    if geometry.resize is not None and min(height, width) != geometry.resize:
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = geometry.resize, int(geometry.resize * long / short)
        rw, rh = (new_short, new_long) if width <= height else (new_long, new_short)
    if geometry.crop is None or (rh, rw) == (geometry.crop, geometry.crop):
        return rh, rw, 0, 0, rh, rw
    crop = geometry.crop
    top = int(round((rh - crop) / 2.0)) if crop <= rh else -((crop - rh) // 2)
    left = int(round((rw - crop) / 2.0)) if crop <= rw else -((crop - rw) // 2)
    return rh, rw, top, left, crop, crop


def _to_image(cam: torch.Tensor, height: int, width: int, geometry: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """A heat map over the model's input (crop height x width) -> the same over the original image (height x
    width), and the mask of the original's pixels the model saw."""
    import torch
    from torch.nn import functional as F

    rh, rw, top, left, ch, cw = _view(height, width, geometry)
    canvas = torch.zeros(2, rh, rw)
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + ch, rh), min(left + cw, rw)
    canvas[0, y0:y1, x0:x1] = cam[y0 - top : y1 - top, x0 - left : x1 - left]
    canvas[1, y0:y1, x0:x1] = 1.0
    if (rh, rw) != (height, width):
        canvas = F.interpolate(canvas[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return canvas[0].clamp(0, 1), canvas[1].clamp(0, 1)


def _jet(heat: torch.Tensor) -> torch.Tensor:
    """The classic blue-cyan-yellow-red colour map of heat maps: H x W in [0, 1] -> 3 x H x W in [0, 1]."""
    import torch

    channels = [(1.5 - (4 * heat - c).abs()).clamp(0, 1) for c in (3.0, 2.0, 1.0)]
    return torch.stack(channels)


def overlay(image: torch.Tensor, heat: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """The picture (uint8 3 x H x W) with the heat map blended over what the model saw and the rest dimmed."""
    import torch

    picture = image.float() / 255.0
    blended = (1 - ALPHA) * picture + ALPHA * _jet(heat)
    out = seen * blended + (1 - seen) * DIM * picture
    return (out * 255.0).round().clamp(0, 255).to(torch.uint8)


def _write_png(path: Path, image: torch.Tensor) -> None:
    from torchvision.io import encode_png

    from .files import write_atomic

    write_atomic(path, encode_png(image).numpy().tobytes())


def _file_name(image: str, label: str, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(image).stem}-{label}").strip("._") or "image"
    name, n = f"{stem}.png", 1
    while name in taken:  # two images of the same name from different folders
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name)
    return name


# -- the whole job ------------------------------------------------------------------------------------------


def _targets(card: Any, target: Any, n: int) -> list[int | None]:
    """Class indices per image (None: that image's top-1), from names or indices as ``zoo sample --class``."""
    from .sample import _class_index

    if target is None:
        return [None] * n
    given = list(target) if isinstance(target, (list, tuple)) else [target] * n
    if len(given) != n:
        raise ZooError(f"{len(given)} classes for {n} images: give one class (for every image) or one per image.")
    out: list[int | None] = []
    for t in given:
        if isinstance(t, str) and t not in card.labels and t.isdigit():
            t = int(t)  # "3" on the command line: an index unless a class is called "3"
        if card.labels:
            out.append(_class_index(card, t))
        elif isinstance(t, int) and not isinstance(t, bool) and t >= 0:
            out.append(t)  # checked against the model's outputs once they are known
        else:
            raise ZooError(f"Model {card.name!r} names no classes on its card; give the class as an index.")
    return out


def explain(
    name: str,
    images: str | Path | list[str | Path],
    target: Any = None,
    *,
    layer: str | None = None,
    method: str = "gradcam",
    out: str | Path | None = None,
    device: str | None = None,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Grad-CAM for classifier `name` on `images`: one record per image.

    A record: ``image``, ``class`` / ``index`` / ``probability`` (the class explained), ``top1`` (label, index,
    probability), ``method``, ``layer`` and ``layer_from`` ("argument", "card" or "auto"), ``map_size`` (the
    layer's H x W), ``size`` (the image's H x W), ``heatmap`` (float32 H x W in [0, 1] over the original image;
    zero where the model saw nothing or found no positive evidence) and, with `out`, ``file``: the overlay PNG.

    Args:
        target: the class to explain: None (each image's top-1), a name or an index for every image, or a list
            with one per image.
        layer: the module to attribute to, as a dotted path (``layer3``, ``features.28``); default: the card's
            ``task_config.explain_layer``, else :func:`find_layer`.
        out: a folder for the overlay PNGs (``<image stem>-<class>.png``), created inside an existing folder.

    Raises:
        ZooError: a model whose task does not explain, an image that cannot be read, an unknown class or layer, an
            output folder that cannot be written; nothing is written then.
    """
    import torch

    from .._api import card as get_card
    from .._api import load
    from .images import read_image
    from .preprocess import card_geometry
    from .sample import check_output

    if method not in METHODS:
        close = difflib.get_close_matches(str(method), METHODS, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ZooError(f"Unknown explanation method {method!r}{hint}; use {', '.join(METHODS)}.")
    card = get_card(name)
    task = explainable_task(card)
    if importlib.util.find_spec("captum") is None:
        raise ZooError("zoo explain needs the package captum (Grad-CAM); install it: pip install captum")
    directory = Path(out) if out is not None else None
    if directory is not None:
        check_output(directory, directory=True)
    paths = [images] if isinstance(images, (str, Path)) else list(images)
    if not paths:
        raise ZooError(f"Name at least one image: zoo explain {name} IMAGE [IMAGE...] -o OUTDIR.")
    decoded = [read_image(p) for p in paths]  # a missing or broken file: one line naming it, before any work
    classes = _targets(card, target, len(paths))
    labels = card.labels or ()

    model = load(name, device=device).float().eval()
    place = next(model.parameters()).device
    first = task.predict_batch(decoded[:1], [str(paths[0])]).images
    if not isinstance(first, torch.Tensor):
        raise ZooError(f"Model {card.name!r} takes images of varying sizes; 'zoo explain' needs a fixed input size.")
    first = task.prepare(first.to(place)).float()
    if layer is not None:
        layer_from, chosen = "argument", _resolve_layer(model, first, layer, "--layer")
    elif (declared := task.explain_layer(model)) is not None:
        layer_from = "card"
        chosen = _resolve_layer(model, first, declared, f"Card {card.name!r}: task_config.explain_layer")
    else:
        layer_from, chosen = "auto", find_layer(model, first)
    module = model.get_submodule(chosen)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum's hook and requires_grad chatter
        from captum.attr import LayerAttribution, LayerGradCam

    geometry = task.geometry() if callable(getattr(task, "geometry", None)) else card_geometry(card)
    records: list[dict[str, Any]] = []
    for begin in range(0, len(paths), batch_size):
        names = [str(p) for p in paths[begin : begin + batch_size]]
        batch = task.predict_batch(decoded[begin : begin + batch_size], names)
        x = task.prepare(batch.images.to(place)).float()

        def scores(inputs: torch.Tensor, batch: Any = batch) -> torch.Tensor:
            out = task.postprocess(model(inputs), batch)
            if not (isinstance(out, torch.Tensor) and out.dim() == 2):
                raise ZooError(f"Model {card.name!r}'s task returns {type(out).__name__}, not N x classes scores.")
            return out

        with torch.no_grad():
            probs = scores(x).float().softmax(dim=1)
        top = probs.argmax(dim=1)
        wanted = [int(t) if c is None else c for t, c in zip(top, classes[begin : begin + len(names)], strict=True)]
        if any(c >= probs.shape[1] for c in wanted):
            raise ZooError(
                f"Class index {max(wanted)} is out of range: model {card.name!r} scores {probs.shape[1]} classes."
            )
        try:
            with warnings.catch_warnings(), torch.enable_grad():
                warnings.simplefilter("ignore")
                cam = LayerGradCam(scores, module).attribute(x, target=wanted, relu_attributions=True)
        except ZooError:
            raise
        except RuntimeError as exc:  # e.g. a layer whose output is changed in place afterwards
            first_line = (str(exc).strip().splitlines() or [""])[0]
            raise ZooError(f"Grad-CAM failed at layer {chosen!r}: {first_line}") from exc
        map_size = list(cam.shape[2:])
        cam = LayerAttribution.interpolate(cam.detach(), tuple(x.shape[2:]), interpolate_mode="bilinear")
        cam = cam[:, 0].float().clamp(min=0).cpu()
        for i, image_name in enumerate(names):
            peak = float(cam[i].max())
            normed = cam[i] / peak if peak > 0 else torch.zeros_like(cam[i])
            image = decoded[begin + i]
            heat, seen = _to_image(normed, int(image.shape[1]), int(image.shape[2]), geometry)
            c, t = wanted[i], int(top[i])
            records.append(
                {
                    "image": image_name,
                    "class": labels[c] if c < len(labels) else str(c),
                    "index": c,
                    "probability": round(float(probs[i, c]), 4),
                    "top1": {
                        "label": labels[t] if t < len(labels) else str(t),
                        "index": t,
                        "probability": round(float(probs[i, t]), 4),
                    },
                    "method": method,
                    "layer": chosen,
                    "layer_from": layer_from,
                    "map_size": map_size,
                    "size": [int(image.shape[1]), int(image.shape[2])],
                    "evidence": peak > 0,
                    "heatmap": heat,
                    "_seen": seen,
                }
            )

    taken: set[str] = set()
    for record, image in zip(records, decoded, strict=True):
        seen = record.pop("_seen")
        if directory is not None:
            directory.mkdir(exist_ok=True)
            path = directory / _file_name(record["image"], record["class"], taken)
            _write_png(path, overlay(image, record["heatmap"], seen))
            record["file"] = str(path)
    return records
