"""The held-out parts that `zoo finetune --val-split/--test-split` make and `zoo eval` re-creates.

They depend only on the labels (in the dataset's reading order, which is sorted), the fractions and the seed,
so anyone with the same data can measure a card's figures again on exactly the same images.

Two parts, two roles (docs/evaluation-protocol.md): the validation part is what a run selects on (best epoch,
early stopping, recipe search); the test part is drawn after it, from what it left, and nothing selects on it.
Adding a test split never moves a validation image: the validation part is drawn first, from the same
generator as without one, so cards measured before test splits existed keep their images. The test part's
generator is seeded with :func:`seed_for_test_split` (a hash of ``--seed``), not ``--seed`` itself nor
``--seed + 1``, whose stream another run's ``--seed 1`` validation split would share.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import ZooError

if TYPE_CHECKING:
    import torch

__all__ = [
    "check_fractions",
    "random_split",
    "random_test_split",
    "seed_for_test_split",
    "stratified_split",
    "stratified_test_split",
]


def stratified_split(targets: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices), sorted: per class, a seeded random `fraction` (at least one image)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for cls in targets.unique():
        idx = (targets == cls).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        k = max(1, round(len(idx) * fraction)) if fraction > 0 and len(idx) > 1 else 0
        val.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def random_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices), sorted: a seeded random `fraction` of n items (at least one when
    fraction > 0 and n > 1), for data without one class per item (detection: split by image)."""
    import torch

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = max(1, round(n * fraction)) if fraction > 0 and n > 1 else 0
    return order[k:].sort().values, order[:k].sort().values


def seed_for_test_split(seed: int) -> int:
    """The seed of the test split's generator: the first 63 bits of blake2b("zoo-test-split:<seed>"), so the
    test draw is a fixed function of ``--seed`` that shares no stream with any run's validation draw."""
    digest = hashlib.blake2b(f"zoo-test-split:{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def check_fractions(val_split: float | None, test_split: float | None) -> None:
    """Refuse, in one line, test/validation fractions that cannot make three parts. A test split needs the
    validation fraction: its images are drawn from what the validation split left, so a different (or
    forgotten) ``--val-split`` would silently measure other images."""
    if test_split is None:
        return
    if not 0 < test_split < 1:
        raise ZooError(f"--test-split {test_split}: give a fraction between 0 and 1, e.g. 0.1.")
    if val_split is None:
        raise ZooError(
            "--test-split needs the run's --val-split too: the test images are drawn from what the validation "
            "split left (pass --val-split 0 for a run that held out no validation images)."
        )
    if not 0 <= val_split < 1:
        raise ZooError(f"--val-split {val_split}: give a fraction from 0 up to (not including) 1, e.g. 0.1.")
    if val_split + test_split >= 1:
        raise ZooError(
            f"--val-split {val_split} and --test-split {test_split} hold out {val_split + test_split:g} of the "
            "data and leave no training images; keep their sum below 1."
        )


def stratified_test_split(
    targets: torch.Tensor, val_split: float, test_split: float, seed: int, classes: Sequence[str] = ()
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, validation, test) indices, sorted. Validation is exactly ``stratified_split(targets, val_split,
    seed)``; then, per class, round(class size x `test_split`) images (at least one) of those it left, drawn
    with the generator seeded :func:`seed_for_test_split`. A class too small to keep a training image is refused, named
    from `classes` (the dataset's class names) when given."""
    import torch

    check_fractions(val_split, test_split)
    rest, val = stratified_split(targets, val_split, seed)
    generator = torch.Generator().manual_seed(seed_for_test_split(seed))
    test = []
    for cls in targets.unique():
        size = int((targets == cls).sum())
        pool = rest[targets[rest] == cls]
        k = max(1, round(size * test_split))
        if len(pool) - k < 1:
            name = classes[int(cls)] if int(cls) < len(classes) else f"#{int(cls)}"
            raise ZooError(
                f"Class {name!r} has {size} image{'s' if size != 1 else ''}: too few for --val-split {val_split} "
                f"--test-split {test_split}, which need one image each for training, validation and test at "
                "least; add images of it or drop the class."
            )
        test.append(pool[torch.randperm(len(pool), generator=generator)[:k]])
    held = torch.cat(test).sort().values
    return rest[~torch.isin(rest, held)], val, held


def random_test_split(
    n: int, val_split: float, test_split: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train, validation, test) indices of n items, sorted, for data without one class per item (detection).
    Validation is exactly ``random_split(n, val_split, seed)``; the test part is round(n x `test_split`) items
    (at least one) of the rest, drawn with the generator seeded :func:`seed_for_test_split`."""
    import torch

    check_fractions(val_split, test_split)
    rest, val = random_split(n, val_split, seed)
    k = max(1, round(n * test_split))
    if len(rest) - k < 1:
        raise ZooError(
            f"{n} images are too few for --val-split {val_split} --test-split {test_split}: no training image "
            "would be left; add images or lower the fractions."
        )
    order = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed_for_test_split(seed)))]
    return order[k:].sort().values, val, order[:k].sort().values
