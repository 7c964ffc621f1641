"""The contract suite shares two CPU cores with whatever else runs: one thread, no progress lines."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def one_thread(zoo_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:  # after zoo_home clears ZOO_*
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("ZOO_NO_PROGRESS", "1")
    yield
    torch.set_num_threads(threads)
