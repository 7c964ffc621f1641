"""fp32 evaluation on a CPU through oneDNN Graph: a traced, frozen copy of the model whose convolutions, biases,
ReLUs and residual additions run as fused oneDNN partitions instead of one PyTorch kernel each.

Why: on a CPU without a faster number format to fall back on, fp32 evaluation is bound by the model's own
kernels once decoding is cached (#16). Measured on this project's 2-core Xeon, resnet56-cifar over 10,000
images in two single-threaded streams, batch 64, channels_last: eager 10.7-10.9 s, this graph 8.0-8.3 s
(1.3x; one thread alone 1.69x), outputs within 3e-6 of eager. Preparing it costs a trace, a freeze and one
profiling batch (~0.3 s), where ``torch.compile`` (Inductor, freezing) took 20.6 s on a cold cache for a
similar gain, longer than the whole evaluation it would speed up.

Only where it is sure to help and easy to check: fp32 on a CPU (bf16 autocast already takes AMX's own path),
enough batches to earn back its preparation, a model whose output is one tensor per batch (fastestdet-coco's
352-px images: 1.28x per batch). The copy is checked against the eager model on the first two images of the
first batch before it is used; anything else (tracing fails, another output type, a difference beyond float
rounding, a torch without TorchScript) returns None and evaluation runs the eager model as before. TorchScript
is deprecated since torch 2.14 (its FutureWarnings are silenced here): when a torch removes it, this path turns
itself off and nothing else changes. ``ZOO_CPU_GRAPH=0`` turns it off by hand.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch

from .. import _config

__all__ = ["graph_for_inference", "onednn_fusion", "wanted"]


#: fewer batches than this run eager: preparing the graph (a trace, a profiling batch, the fusion on its second
#: call) costs about two to three batches' time, which a 1.3x faster batch earns back only after ten or so.
#: Measured: fastestdet-coco on coco128 (2 batches of 64) took 4.0 s with the graph, 2.7 s without.
MIN_BATCHES = 16


def wanted(device: torch.device, bf16: bool, batches: int) -> bool:
    """Whether evaluating `batches` batches on `device` at this precision should try the fused graph."""
    return _config.cpu_graph() and device.type == "cpu" and not bf16 and batches >= MIN_BATCHES


@contextlib.contextmanager
def onednn_fusion() -> Iterator[None]:
    """oneDNN Graph fusion on for TorchScript graphs optimised inside the block (torch keeps one process-wide
    switch; the previous setting comes back afterwards). The profiling executor fuses on a graph's second call,
    so the whole evaluation runs inside."""
    try:
        before = torch._C._jit_llga_enabled()
    except AttributeError:  # a torch without TorchScript's oneDNN Graph bridge
        yield
        return
    torch.jit.enable_onednn_fusion(True)
    try:
        yield
    finally:
        torch.jit.enable_onednn_fusion(before)


class _FixedBatch(torch.nn.Module):
    """The traced graph, called at the one batch size it was profiled at: a smaller batch is padded with zeros
    (their outputs dropped), a larger one is cut into pieces. Any new shape would make TorchScript profile and
    fuse again, which costs more than the padding. Attributes the task reads (``num_classes``...) come from the
    eager model."""

    def __init__(self, graph: Any, size: int, model: torch.nn.Module, channels_last: bool) -> None:
        super().__init__()
        self.graph, self.size, self.channels_last = graph, size, channels_last
        object.__setattr__(self, "eager", model)  # not a submodule: no second copy of its parameters in state

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["eager"], name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        n = x.shape[0]
        if n > self.size:
            return torch.cat([self.forward(part) for part in x.split(self.size)])
        if n < self.size:
            x = torch.cat([x, x.new_zeros((self.size - n, *x.shape[1:]))])
        return self.graph(x.contiguous(memory_format=fmt))[:n]


def graph_for_inference(model: torch.nn.Module, example: torch.Tensor, channels_last: bool) -> Any:
    """A fused-graph copy of `model` for batches shaped like `example` (real images, already prepared), or None
    where it does not apply or does not give the eager model's outputs. Call inside :func:`onednn_fusion` and
    ``torch.inference_mode`` (or ``no_grad``); the caller's model is not changed."""
    if not isinstance(example, torch.Tensor) or example.dim() != 4 or example.dtype != torch.float32:
        return None
    probe = example[:2]
    try:
        expected = model(probe)  # two images: a model with another output type is turned away cheaply
        if not isinstance(expected, torch.Tensor) or expected.shape[:1] != probe.shape[:1]:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer warnings
            traced = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))
        fixed = _FixedBatch(traced, len(example), model, channels_last)
        got = fixed(probe)  # the profiling run, padded to the traced size as every later call is
    except Exception:  # noqa: BLE001 - tracing, freezing or the graph failed: the eager model runs, as before
        return None
    scale = max(1.0, float(expected.abs().max()))
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-3, atol=1e-4 * scale):
        return None
    return fixed
