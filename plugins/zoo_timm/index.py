"""Build the index of timm's pretrained classifiers from timm's own metadata (imports timm, hence torch).

    python -m zoo_timm.index                        # (re)build the index for the installed timm
    python -m zoo_timm.index --params 'resnet*'     # also count the parameters of these (arch.tag globs)

One card per pretrained tag (``resnet50.a1_in1k`` -> ``timm/resnet50.a1_in1k``), since the tags of one
architecture differ in preprocessing, classes and license; ``timm/<arch>`` is timm's default tag. Everything on a
card comes from timm's ``PretrainedCfg``; no model is built (counting parameters means building each
architecture, about 0.45 s apiece, 9 minutes for timm 1.0's 1,151 architectures on a busy 2-core machine, so the
counts are filled in lazily: ``_paths.params_path``):

* builder: ``zoo_timm.models:create_model``, i.e. ``timm.create_model('<arch>.<tag>', pretrained=False,
  num_classes=...)``, timm's own constructor (which also sets the model's ``pretrained_cfg``).
* weights: ``hf://<hf_hub_id>/model.safetensors``, the file timm itself loads from the Hugging Face hub first,
  with no sha256 on the card: zoo checks the bytes against the sha256 the hub publishes and records it on the
  first verified fetch (docs/architecture.md §5, §16). Only timm's own hub repos (``timm/...``, whose files timm
  uploaded from its models' state dicts) are indexed: the few tags whose weights live elsewhere (a URL only, or a
  third party's repo) are named in the index's ``skipped`` with the reason.
* preprocessing: resize to ``floor(input / crop_pct)``, centre crop to the input size, interpolation, mean, std
  (what ``timm.data.create_transform`` does for evaluation with ``crop_mode='center'``).
* labels: ImageNet class descriptions (``timm.data.ImageNetInfo``) for the subset ``infer_imagenet_subset``
  finds; tags whose outputs are not ImageNet classes (CLIP projections, ``num_classes=0`` backbones) are skipped.
* head (``classifier``), license, paper ids, origin URL, the architecture's docstring.

timm's wheel ships no accuracy table (the results CSVs live in its git repository), so the cards carry no metrics.
"""

from __future__ import annotations

import fnmatch
import math
import sys
import time
from pathlib import Path
from typing import Any, Final

__all__ = ["build_index", "count_params", "model_names", "tag_card", "write_index"]

INTERPOLATIONS: Final = ("nearest", "bilinear", "bicubic")  # what zoo's preprocessing can express
WEIGHTS_FILE: Final = "model.safetensors"  # what timm's load_state_dict_from_hf reads first from a timm/ repo


class Skip(Exception):  # noqa: N818 - a reason a tag has no card, recorded in the index, not an error
    pass


def model_names() -> list[str]:
    """timm's pretrained ``arch.tag`` names, in timm's order (an architecture's default tag first)."""
    import timm

    return list(timm.list_pretrained())


def _labels_key(cfg: dict[str, Any]) -> str:
    """The ImageNet subset the tag's classes are (its number of outputs says which), or Skip."""
    from timm.data import infer_imagenet_subset

    subset = infer_imagenet_subset(cfg)
    if subset is None:
        n = cfg.get("num_classes") or 0
        raise Skip(
            "no classifier (num_classes=0): a feature backbone" if not n else f"{n} outputs, not ImageNet classes"
        )
    return str(subset)


def _weights_file(cfg: dict[str, Any]) -> str:
    """The hub file timm loads for the tag, or Skip when it is not a safetensors file in a timm/ repo."""
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        raise Skip(f"weights not on the Hugging Face hub (timm downloads {cfg.get('url') or 'nothing'})")
    if not str(hub_id).startswith("timm/") or "@" in hub_id:
        raise Skip(f"weights in a third party's hub repo ({hub_id}), not one of timm's own")
    name = cfg.get("hf_hub_filename")
    # timm reads a named hub file with its custom loader when custom_load is set; without a name it loads
    # model.safetensors as a plain state dict whatever custom_load says (that flag is for the original URL)
    if name and (not name.endswith(".safetensors") or cfg.get("custom_load")):
        raise Skip(f"hub file {name} is not a plain safetensors state dict")
    return str(name or WEIGHTS_FILE)


def _preprocess(cfg: dict[str, Any]) -> tuple[list[int], dict[str, Any], str]:
    """(input shape, zoo preprocessing, a note on what zoo does differently from timm, if anything)."""
    channels, height, width = cfg["input_size"]
    if height != width or channels != 3:
        raise Skip(f"input {channels}x{height}x{width}: zoo's preprocessing crops squares of RGB images")
    interpolation = cfg.get("interpolation") or "bilinear"
    if interpolation not in INTERPOLATIONS:
        raise Skip(f"interpolation {interpolation!r}")
    crop_pct = cfg.get("crop_pct") or 1.0
    resize = math.floor(height / crop_pct)  # timm.data.transforms_factory.transforms_imagenet_eval
    mode = cfg.get("crop_mode") or "center"
    note = ""
    if mode != "center":
        note = (
            f" timm evaluates it with crop_mode={mode!r} (the whole image resized to {resize}x{resize} before the "
            "crop, or padded); zoo resizes the shorter side and crops the centre, which differs on non-square images."
        )
    preprocess = {
        "resize": resize,
        "crop": height,
        "interpolation": interpolation,
        "mean": [float(v) for v in cfg["mean"]],
        "std": [float(v) for v in cfg["std"]],
    }
    return [channels, height, width], preprocess, note


def _citation(cfg: dict[str, Any]) -> str | None:
    ids = [i.strip() for i in str(cfg.get("paper_ids") or "").split(",") if i.strip()]
    links = [f"https://arxiv.org/abs/{i.removeprefix('arXiv:')}" if i.startswith("arXiv:") else i for i in ids]
    parts = [p for p in (cfg.get("paper_name"), *links) if p]
    return "; ".join(parts) or None


def _summary(entrypoint: Any) -> str:
    """The first paragraph of the architecture's docstring, else of its model file's (timm documents either)."""
    for doc in (entrypoint.__doc__, getattr(sys.modules.get(entrypoint.__module__), "__doc__", None)):
        paragraph = (doc or "").strip().split("\n\n")[0]
        if paragraph:
            return " ".join(paragraph.split())
    return ""


def tag_card(name: str, version: str) -> tuple[dict[str, Any], str]:
    """(The card of timm's pretrained tag `name`, its label-set key); Skip when zoo cannot express it."""
    import timm.models

    pretrained = timm.models.get_pretrained_cfg(name)
    if pretrained is None:
        raise Skip("timm has no pretrained config for it")
    cfg = pretrained.to_dict()
    arch, _, tag = name.partition(".")
    labels = _labels_key(cfg)
    file = _weights_file(cfg)
    shape, preprocess, crop_note = _preprocess(cfg)
    head = cfg.get("classifier")
    head = head[0] if isinstance(head, (list, tuple)) else head  # distilled models: the class head, not head_dist
    summary = _summary(timm.models.model_entrypoint(arch))
    extra = " ".join(str(cfg[k]) for k in ("description", "notes") if cfg.get(k))
    origin = cfg.get("origin_url") or cfg.get("url")
    test_size = cfg.get("test_input_size")
    notes = (
        f"timm {version}'s pretrained tag {name}: {file} in the hub repo {cfg['hf_hub_id']}, verified against the "
        "sha256 the hub publishes (recorded on the first verified download)."
        + (f" Originally from {origin}." if origin else "")
        + (f" timm also evaluates it at {test_size[-1]}px (test_input_size)." if test_size else "")
        + crop_note
    )
    card = {
        "task": "classifier",
        "description": " ".join(p for p in (summary, extra) if p) or f"timm's {arch}",
        "builder": "zoo_timm.models:create_model",
        "kwargs": {"model_name": name, "num_classes": int(cfg["num_classes"])},
        "input": {"shape": shape},
        "preprocess": preprocess,
        "labels": labels,
        **({"head": head} if head else {}),
        **({"license": cfg["license"]} if cfg.get("license") else {}),
        "source": f"https://huggingface.co/{cfg['hf_hub_id']}",
        "citation": _citation(cfg),
        "weights": {tag: {"uri": f"hf://{cfg['hf_hub_id']}/{file}", "format": "safetensors", "notes": notes}},
    }
    return card, labels


def _label_set(subset: str) -> list[str]:
    """The class descriptions of an ImageNet subset as timm prints them ('tench, Tinca tinca')."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo(subset)
    return [str(info.index_to_description(i)) for i in range(info.num_classes())]


def build_index(names: list[str] | None = None) -> dict[str, Any]:
    """The index (as stored) for the installed timm: a card for every pretrained tag zoo can express."""
    import timm.models

    from ._paths import INDEX_FORMAT, timm_version

    version = timm_version()
    label_sets: dict[str, list[str]] = {}
    cards: dict[str, Any] = {}
    defaults: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for name in names if names is not None else model_names():
        try:
            cards[name], labels = tag_card(name, version)
        except Skip as reason:
            skipped[name] = str(reason)
            continue
        if labels not in label_sets:
            label_sets[labels] = _label_set(labels)
        arch = name.partition(".")[0]
        if arch not in defaults:
            default = timm.models.get_pretrained_cfg(arch)  # the arch's default tag, as timm resolves it
            defaults[arch] = (default.tag if default is not None else None) or name.partition(".")[2]
    return {
        "format": INDEX_FORMAT,
        "timm": version,
        "label_sets": label_sets,
        "defaults": defaults,
        "skipped": skipped,
        "models": cards,
    }


def write_index(path: Path, names: list[str] | None = None) -> dict[str, Any]:
    """Build the index and write it to `path` atomically; say so on stderr, with the time it took."""
    from zoo.namespaces import announce, built, write_json

    from ._paths import timm_version

    start = announce("timm", timm_version())
    data = build_index(names)
    write_json(path, data)
    built(data, "timm pretrained tags", path, start)
    return data


def count_params(name: str) -> int:
    """The parameter count of timm's `name` (``arch.tag``) as its card builds it, built on the meta device."""
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    return sum(p.numel() for p in model.parameters())


def record_params(counts: dict[str, int]) -> None:
    """Add parameter counts to the file the index is read with (a cache: a lost race only loses an entry)."""
    from zoo.namespaces import write_json

    from ._paths import params_path, read_params

    known = read_params()
    if all(known.get(k) == v for k, v in counts.items()):
        return
    write_json(params_path(), dict(sorted({**known, **counts}.items())))


def _main(argv: list[str]) -> int:
    import argparse

    from ._paths import index_path

    parser = argparse.ArgumentParser(prog="python -m zoo_timm.index", description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", nargs="*", metavar="GLOB", help="count the parameters of these arch.tag names")
    args = parser.parse_args(argv)
    data = write_index(index_path())
    if args.params is not None:
        wanted = [n for n in data["models"] if any(fnmatch.fnmatchcase(n, g) for g in args.params or ["*"])]
        start, counts = time.perf_counter(), {}
        for name in wanted:
            counts[name] = count_params(name)
        record_params(counts)
        print(
            f"zoo: counted the parameters of {len(counts)} tags in {time.perf_counter() - start:.1f} s", file=sys.stderr
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
