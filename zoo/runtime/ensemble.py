"""Ensembles of classifiers (#19 part 4): ``ensemble:a+b`` names, their cards, the module, and their evaluation.

An ensemble's output is the log of the mean of its members' softmax probabilities. Those are valid logits: a
softmax of them gives back exactly the mean probabilities, their argmax is the ensemble's prediction, and a
cross-entropy on them is the ensemble's negative log-likelihood, so the classifier task (top-1/top-5, records
with probabilities, the confusion matrix) works on an ensemble unchanged.

The name form is resolved in the API layer (``zoo.card``, ``zoo.load``), not in the registry: an ensemble is
made of cards, it is not one (docs/architecture.md, "Ensembles and registered models"). A saved ensemble
(``zoo register NAME --from 'ensemble:a+b'``) is a user card whose builder is :data:`ENSEMBLE_BUILDER` and whose
kwargs name the members; ``zoo.load`` builds it from its members' own verified weights.

Torch-free at import (zoo.card uses it): torch is imported by the functions that build or run a module.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from .._card import ModelCard, Preprocess
from ..errors import ZooError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "ENSEMBLE_BUILDER",
    "PREFIX",
    "build_ensemble",
    "ensemble_card",
    "evaluate_ensemble",
    "is_ensemble",
    "members_of",
    "parse_name",
]

PREFIX: Final = "ensemble:"
ENSEMBLE_BUILDER: Final = "zoo.runtime.ensemble:build_ensemble"


def parse_name(name: str) -> list[str]:
    """The members of ``ensemble:a+b[+c...]`` (each ``name``, ``name.tag`` or ``plugin/name[.tag]``)."""
    members = [m.strip() for m in name[len(PREFIX) :].split("+")]
    if any(not m for m in members) or len(members) < 2:
        raise ZooError(f"Bad ensemble name {name!r}: write ensemble:NAME+NAME[+NAME...] (two members at least).")
    return members


def is_ensemble(name_or_card: str | ModelCard) -> bool:
    """Whether `name_or_card` is an ``ensemble:`` name or a (saved) ensemble card."""
    if isinstance(name_or_card, ModelCard):
        return name_or_card.builder == ENSEMBLE_BUILDER
    return name_or_card.startswith(PREFIX)


def members_of(card: ModelCard) -> list[str]:
    """The member names of an ensemble card (synthesised or saved)."""
    members = card.kwargs.get("members")
    if not isinstance(members, list) or len(members) < 2 or not all(isinstance(m, str) and m for m in members):
        raise ZooError(
            f"Ensemble card {card.name!r} ({card.origin}): kwargs.members must list two model names at least."
        )
    return list(members)


def _geometry(card: ModelCard) -> str:
    pre = card.preprocess or Preprocess()
    shape = "x".join(str(d) for d in card.input_shape) or "any size"
    return f"{shape}, resize {pre.resize}, crop {pre.crop}, {pre.interpolation}"


def member_cards(members: list[str]) -> list[ModelCard]:
    """The members' cards, checked to form an ensemble: classifiers with the same labels (in the same order) and
    the same input geometry (shape, resize, crop, interpolation). Normalisation may differ: the ensemble
    re-normalises its input for each member. Anything else is one ZooError naming the mismatch."""
    from .._registry import get_registry

    registry = get_registry()
    if len(set(members)) != len(members):
        twice = next(m for m in members if members.count(m) > 1)
        raise ZooError(f"Ensemble names {twice!r} twice; each member once.")
    cards = [registry.resolve(m).card for m in members]
    for member, card in zip(members, cards, strict=True):
        if is_ensemble(card):
            raise ZooError(f"Ensemble member {member!r} is itself an ensemble; list its members instead.")
        if card.task != "classifier":
            raise ZooError(f"Ensembles are for classifiers; {member!r} is a {card.task}.")
    first, name0 = cards[0], members[0]
    for member, card in zip(members[1:], cards[1:], strict=True):
        if card.labels != first.labels:
            if set(card.labels) == set(first.labels):
                why = "the same classes in a different order"
            else:
                only = [x for x in card.labels if x not in first.labels][:3]
                lacks = [x for x in first.labels if x not in card.labels][:3]
                why = (
                    f"{len(first.labels)} vs {len(card.labels)} labels"
                    + (f"; {member!r} has {only}" if only else "")
                    + (f"; {member!r} lacks {lacks}" if lacks else "")
                )
            raise ZooError(f"Cannot ensemble {name0!r} and {member!r}: their labels differ ({why}).")
        if _geometry(card) != _geometry(first):
            raise ZooError(
                f"Cannot ensemble {name0!r} and {member!r}: their input geometry differs "
                f"({_geometry(first)} vs {_geometry(card)})."
            )
    return cards


def ensemble_card(members: list[str], name: str | None = None) -> ModelCard:
    """The card of the ensemble of `members` (checked by :func:`member_cards`): the first member's labels,
    input and preprocessing, no weights of its own (each member brings its own)."""
    cards = member_cards(members)
    first = cards[0]
    params = [c.params for c in cards]
    return ModelCard(
        name=name or PREFIX + "+".join(members),
        task="classifier",
        plugin="zoo",
        builder=ENSEMBLE_BUILDER,
        origin=f"ensemble of {', '.join(members)}",
        kwargs={"members": list(members)},
        input_shape=first.input_shape,
        preprocess=first.preprocess,
        labels=first.labels,
        params=sum(p for p in params if p is not None) if all(p is not None for p in params) else None,
        description=f"Ensemble (mean of probabilities) of {', '.join(members)}.",
    )


def card_for(name: str) -> ModelCard:
    """The card of an ``ensemble:`` name."""
    return ensemble_card(parse_name(name))


@functools.cache
def _module_class() -> type:
    import math

    import torch
    from torch import nn

    class Ensemble(nn.Module):
        """Members' log-probabilities averaged in probability space: ``log(mean_i softmax(member_i(x)))``.

        The input is normalised with the first member's mean and std; a member whose card normalises
        differently gets it re-normalised on the way in (``x * scale + shift``)."""

        def __init__(
            self, members: list[nn.Module], names: list[str], renorm: list[tuple[list[float], list[float]] | None]
        ) -> None:
            super().__init__()
            self.members = nn.ModuleList(members)
            self.member_names = tuple(names)
            self.renormalise = tuple(r is not None for r in renorm)
            for i, r in enumerate(renorm):
                scale, shift = r if r is not None else ([1.0], [0.0])
                self.register_buffer(f"scale{i}", torch.tensor(scale).view(1, -1, 1, 1), persistent=False)
                self.register_buffer(f"shift{i}", torch.tensor(shift).view(1, -1, 1, 1), persistent=False)

        def member_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
            """Each member's own output (its logits) for the ensemble's input `x`."""
            out = []
            for i, member in enumerate(self.members):
                xi = x * getattr(self, f"scale{i}") + getattr(self, f"shift{i}") if self.renormalise[i] else x
                out.append(member(xi))
            return out

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logp = torch.stack([torch.log_softmax(y.float(), dim=1) for y in self.member_logits(x)])
            return torch.logsumexp(logp, dim=0) - math.log(len(self.members))

    return Ensemble


def _renorm(first: Preprocess | None, card: ModelCard) -> tuple[list[float], list[float]] | None:
    """(scale, shift) taking an input normalised with `first` to one normalised with `card`'s preprocessing."""
    pre = card.preprocess
    if first is None or pre is None or (pre.mean == first.mean and pre.std == first.std):
        return None
    scale = [s0 / s for s0, s in zip(first.std, pre.std, strict=True)]
    shift = [(m0 - m) / s for m0, m, s in zip(first.mean, pre.mean, pre.std, strict=True)]
    return scale, shift


def assemble(members: list[str], modules: list[nn.Module]) -> nn.Module:
    """An ensemble module over already-loaded member `modules` (the cards are checked again)."""
    cards = member_cards(members)
    first = cards[0].preprocess
    model = _module_class()(list(modules), members, [_renorm(first, c) for c in cards])
    parameter = next(iter(model.parameters()), None)
    if parameter is not None:
        model.to(parameter.device)  # the re-normalisation buffers, where the members are
    return model.eval()


def build_ensemble(
    *,
    members: list[str],
    pretrained: bool = True,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
) -> nn.Module:
    """Load every member (with its own verified weights) and return the ensemble module, in eval mode."""
    from .._api import load

    member_cards(members)  # refused before any weights are fetched
    return assemble(members, [load(m, pretrained=pretrained, device=device, dtype=dtype) for m in members])


def evaluate_ensemble(
    name: str, data: str | Path, *, device: str | None = None, **options: Any
) -> tuple[Any, dict[str, Any]]:
    """Evaluate ensemble `name` (``ensemble:a+b`` or a saved ensemble card) and each of its members on `data`,
    with the same options. Returns the ensemble's EvalResult and ``{"members": [{"model", "<headline>"}],
    "best_member", "metric", "ensemble", "gain"}``: the gain is the ensemble's headline figure over the best
    member's (positive: the ensemble is better, for metrics where lower is better too)."""
    from .._api import card as get_card
    from .evaluate import evaluate

    card = get_card(name)
    members = members_of(card)
    model = build_ensemble(members=members, device=device)
    result = evaluate(name, data, model=model, device=device, **options)
    metric, higher = result.headline
    rows = []
    for member, module in zip(members, cast("nn.ModuleList", model.members), strict=True):  # an Ensemble's
        figure = evaluate(member, data, model=module, device=device, **options).metrics[metric]
        rows.append({"model": member, metric: figure})
    best = (max if higher else min)(rows, key=lambda r: r[metric])
    ensemble_figure = result.metrics[metric]
    gain = ensemble_figure - best[metric] if higher else best[metric] - ensemble_figure
    return result, {
        "metric": metric,
        "members": rows,
        "best_member": best["model"],
        "ensemble": ensemble_figure,
        "gain": round(gain, 4),
    }


def saved_entry(card: ModelCard, description: str | None = None) -> dict[str, Any]:
    """The user-registry entry that saves ensemble `card` under a name of its own."""
    entry: dict[str, Any] = {
        "task": card.task,
        "builder": ENSEMBLE_BUILDER,
        "kwargs": {"members": members_of(card)},
        "description": description or card.description,
        "input": {"shape": list(card.input_shape)} if card.input_shape else None,
        "preprocess": _plain(dataclasses.asdict(card.preprocess)) if card.preprocess else None,
        "labels": list(card.labels) or None,
        "params": card.params,
        "source": f"zoo register from {card.name}",
    }
    return {k: v for k, v in entry.items() if v is not None}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
