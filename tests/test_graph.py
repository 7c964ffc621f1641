"""The fused oneDNN graph for fp32 evaluation on a CPU (zoo.runtime.graph): used only where it gives the eager
model's outputs, at any batch size, and turned away for everything else."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.runtime.graph import graph_for_inference, onednn_fusion


class Residual(nn.Module):
    """Conv, ReLU and a residual addition: what oneDNN Graph fuses."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        h = torch.relu(self.b(h) + h)
        return self.head(h.mean((2, 3)))


class Records(nn.Module):
    """A detector-like model: one dict per image, which the graph cannot stand in for."""

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return [{"boxes": row.reshape(-1)[:4]} for row in x]


class BatchDependent(nn.Module):
    """An output that depends on the batch's size: padding would change it, so the check must turn it away."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((1, 2, 3)) * x.shape[0]


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("channels_last", [True, False])
def test_the_graph_gives_the_eager_outputs_at_any_batch_size(channels_last):
    model = Residual().eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with onednn_fusion(), torch.inference_mode():
        graph = graph_for_inference(model, images(8).contiguous(memory_format=fmt), channels_last)
        assert graph is not None and graph.size == 8
        for n in (8, 3, 1, 8, 19):  # the traced size, padded ones, and one cut into pieces
            x = images(n, seed=n).contiguous(memory_format=fmt)
            assert torch.allclose(graph(x), model(x), atol=1e-5), n
    assert graph.eager is model  # the task still reads the model's own attributes through it
    assert graph.head is model.head


def test_what_the_graph_cannot_stand_in_for_runs_eager():
    with onednn_fusion(), torch.inference_mode():
        assert graph_for_inference(Records().eval(), images(4), True) is None
        assert graph_for_inference(BatchDependent().eval(), images(4), True) is None  # caught by the check
        assert graph_for_inference(Residual().eval(), images(4).to(torch.bfloat16), True) is None
        assert graph_for_inference(Residual().eval(), torch.rand(4, 3), True) is None


def test_the_fusion_switch_comes_back_as_it_was():
    before = torch._C._jit_llga_enabled()
    with onednn_fusion():
        assert torch._C._jit_llga_enabled()
    assert torch._C._jit_llga_enabled() == before
