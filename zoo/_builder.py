"""Build a model from its card and load verified weights into it: the first place torch is imported.

Three construction strategies (bench/bench_load.py measures them; docs/architecture.md #6):

* ``noinit`` (default): build on the CPU with ``torch.nn.init``'s functions replaced by no-ops, so
  parameters are allocated but never filled with random numbers, then ``load_state_dict(assign=True)``
  makes the (memory-mapped) tensors of the safetensors file the parameters: no initialisation, no copy.
  Buffers computed in ``__init__`` (non-persistent ones included) are built normally.
* ``meta``: build on the meta device, then assign. Also skips initialisation, but the meta device's
  per-operation dispatch made construction slower than ``noinit`` at every size we measured.
* ``eager``: build normally and copy the weights in: the reference behaviour.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from ._card import ModelCard
from .errors import WeightsError, ZooError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["build_model", "check_trusted", "import_builder", "pick_device"]

STRATEGIES: Final = ("noinit", "meta", "eager")
# Modules whose callables build models from plain keyword arguments and run no other code: a card may name
# them without the user's say-so (torch.hub, torch.load and the like are outside these on purpose) (#20).
TRUSTED_LIBRARIES: Final = ("torch.nn", "torchvision.models")
_DIFF_LINES: Final = 8


@contextlib.contextmanager
def _skip_init() -> Iterator[None]:
    """Make ``torch.nn.init``'s in-place initialisers no-ops while a model whose weights we load is built.

    Every tensor they would fill is overwritten by the (strictly checked) state dict, so the random
    numbers are pure waste: ~90% of construction time for a ResNet-50 on CPU. Not thread-safe: another
    thread building a model at the same moment would also skip its initialisation.
    """
    import torch

    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {name: getattr(torch.nn.init, name) for name in names}

    def keep(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return tensor

    for name in names:
        setattr(torch.nn.init, name, keep)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def import_builder(spec: str, *, model: str) -> Callable[..., nn.Module]:
    """Import ``package.module:callable`` (the card's builder)."""
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ZooError(
            f"Builder {spec!r} of model {model!r} cannot be imported: {exc}. Is the plugin that provides it installed?"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ZooError(f"Builder {spec!r} of model {model!r}: module {module_name!r} has no {attr!r}.") from None
    if not callable(obj):
        raise ZooError(f"Builder {spec!r} of model {model!r} is not callable.")
    return obj


def _under(module: str, prefixes: set[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def check_trusted(card: ModelCard) -> None:
    """Refuse to import a builder whose module the user never trusted (torch.hub's `trust_repo`, for cards; #20).

    Trusted: the packages of the installed plugins that loaded (their cards come with their code anyway),
    TRUSTED_LIBRARIES, the modules in ``ZOO_TRUST`` (comma-separated) and in the ``trust:`` list of the user's
    own registry. Anything else — `os:system` in a registry file someone handed over — is never imported.
    """
    import os

    from ._registry import get_registry

    module = card.builder.partition(":")[0]
    registry = get_registry()
    env = {m.strip() for m in os.environ.get("ZOO_TRUST", "").split(",") if m.strip()}
    trusted = set(TRUSTED_LIBRARIES) | registry.plugins.trusted_packages() | registry.trusted | env
    if _under(module, trusted):
        return
    raise ZooError(
        f"Builder {card.builder!r} of model {card.name!r} is not trusted: module {module!r} belongs to no installed "
        f"plugin (card from {card.origin!r}). If you trust that code, set ZOO_TRUST={module.partition('.')[0]} or add "
        f"it to 'trust:' in your own registry ({_trust_home()})."
    )


def _trust_home() -> str:
    from . import _config

    try:
        return str(_config.cache_root() / "registry.yaml")
    except Exception:  # noqa: BLE001 - only for the message
        return "$ZOO_HOME/registry.yaml"


def _checked(builder: Callable[..., Any], card: ModelCard) -> Callable[..., nn.Module]:
    """Wrap a builder so that anything but an nn.Module is a clear error, not an AttributeError later."""
    from torch import nn

    def build(**kwargs: Any) -> nn.Module:
        model = builder(**kwargs)
        if not isinstance(model, nn.Module):
            raise ZooError(
                f"Builder {card.builder!r} of model {card.name!r} returned a {type(model).__name__}, "
                "not a torch.nn.Module."
            )
        return model

    return build


def pick_device(device: str | torch.device | None) -> torch.device:
    """The requested device, or the best available one: cuda, then mps, then cpu."""
    import torch

    if device is not None and str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    import torch

    if name is None or isinstance(name, torch.dtype):
        return name
    value = getattr(torch, str(name), None)
    if not isinstance(value, torch.dtype):
        raise ZooError(f"Unknown dtype {name!r}; use e.g. 'float32', 'float16' or 'bfloat16'.")
    return value


def _optional_key(key: str) -> bool:
    # BatchNorm's step counter is training bookkeeping that many published checkpoints omit;
    # BatchNorm itself fills it in when absent.
    return key.endswith("num_batches_tracked")


def _key_diff(
    expected: Mapping[str, tuple[int, ...]], got: Mapping[str, tuple[int, ...]], skip: set[str]
) -> str | None:
    missing = sorted(k for k in expected.keys() - got.keys() if not _optional_key(k) and k not in skip)
    unexpected = sorted(got.keys() - expected.keys())
    shapes = sorted(k for k in expected.keys() & got.keys() if k not in skip and tuple(expected[k]) != tuple(got[k]))
    if not (missing or unexpected or shapes):
        return None
    lines = []
    for title, keys, fmt in (
        ("missing from the file", missing, lambda k: k),
        ("in the file but not in the model", unexpected, lambda k: k),
        ("shape differs (model vs file)", shapes, lambda k: f"{k}: {tuple(expected[k])} vs {tuple(got[k])}"),
    ):
        if keys:
            shown = ", ".join(fmt(k) for k in keys[:_DIFF_LINES])
            more = f" (+{len(keys) - _DIFF_LINES} more)" if len(keys) > _DIFF_LINES else ""
            lines.append(f"{len(keys)} {title}: {shown}{more}")
    return "; ".join(lines)


def _head_keys(
    card: ModelCard, expected: Mapping[str, tuple[int, ...]], got: Mapping[str, tuple[int, ...]]
) -> set[str]:
    """Head tensors whose shape changed through an override (e.g. num_classes): they get fresh init."""
    if not card.head:
        return set()
    prefix = card.head + "."
    return {k for k in expected if k.startswith(prefix) and k in got and tuple(expected[k]) != tuple(got[k])}


def build_model(
    card: ModelCard,
    path: os.PathLike | None,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    overrides: Mapping[str, Any] | None = None,
    strategy: str | None = None,
) -> nn.Module:
    """Build `card`'s model, load the safetensors file at `path` (if any), place it, set eval mode."""
    import torch

    check_trusted(card)
    builder = _checked(import_builder(card.builder, model=card.name), card)
    kwargs = {**card.kwargs, **(overrides or {})}
    target_device = pick_device(device)
    target_dtype = _dtype(dtype)
    if path is None:
        model = builder(**kwargs)
        return model.to(device=target_device, dtype=target_dtype).eval()

    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        got = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # header only, no tensor reads
    from . import _config

    strategy = strategy or _config.build_strategy()
    if strategy not in STRATEGIES:
        raise ZooError(f"Unknown build strategy {strategy!r}; use one of {', '.join(STRATEGIES)}.")
    if strategy == "noinit":
        with _skip_init():
            model = builder(**kwargs)
    elif strategy == "meta":
        with torch.device("meta"):
            model = builder(**kwargs)
        persistent = set(model.state_dict())
        if any(name not in persistent for name, _ in model.named_buffers()):
            strategy = "eager"  # non-persistent buffers would stay on meta: build for real
    if strategy == "eager":
        model = builder(**kwargs)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # Only an explicit override (num_classes=...) may re-shape the head; otherwise a mismatch is an error.
    fresh = _head_keys(card, expected, got) if overrides else set()
    diff = _key_diff(expected, got, fresh)
    if diff:
        raise WeightsError(f"Weights {path} do not fit model {card.name!r} ({card.builder}): {diff}.")

    load_device = "cpu" if target_device.type == "mps" else str(target_device)
    state = load_file(str(path), device=load_device)
    for key in fresh:
        del state[key]
    float_dtype = target_dtype or torch.get_default_dtype()
    kinds = {k: v.is_floating_point() for k, v in model.state_dict().items()}
    wrong = [
        f"{k} ({tensor.dtype} for a {'floating' if kinds[k] else 'integer'} tensor)"
        for k, tensor in state.items()
        if k in kinds and tensor.is_floating_point() != kinds[k]
    ]
    if wrong:  # int64 or bool weights where the model has floats: load_state_dict would fail with a traceback
        raise WeightsError(
            f"Weights {path} do not fit model {card.name!r}: {', '.join(wrong[:3])}"
            f"{' ...' if len(wrong) > 3 else ''}. The file is not this model's checkpoint."
        )
    for key, tensor in state.items():
        if tensor.is_floating_point() and tensor.dtype != float_dtype:
            state[key] = tensor.to(float_dtype)
    if strategy == "eager":
        model.load_state_dict(state, strict=not fresh)
    else:
        model.load_state_dict(state, strict=not fresh, assign=True)
        _materialize_fresh(model, card, fresh, target_device, float_dtype, on_meta=strategy == "meta")
    return model.to(device=target_device, dtype=target_dtype).eval()


def _materialize_fresh(
    model: nn.Module, card: ModelCard, fresh: set[str], device: torch.device, dtype: torch.dtype, *, on_meta: bool
) -> None:
    """Give the re-shaped head its normal initialisation (it was built without one, or on meta)."""
    if not fresh or not card.head:
        return
    head = model.get_submodule(card.head)
    if on_meta:
        head.to_empty(device=device)
    head.to(device=device, dtype=dtype)
    for module in head.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
