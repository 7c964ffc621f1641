"""Batch-parallel inference on a CPU: one single-threaded stream per core, each running whole batches.

Why: on a CPU with few cores, splitting each convolution of a small image across the cores (PyTorch's intra-op
parallelism) leaves them waiting on each other at every layer. Giving each core its own batch keeps them busy:
resnet56-cifar in fp32 ran 1.17-1.39x faster per round (8 interleaved rounds, median 1.31x; a second run 1.17x),
resnet18-cifar 1.24x, and fastestdet-coco's 352-px images about the same (1.04x), on this project's 2-core Xeon.
Outputs came out the same to the bit in every comparison made (those models, ddpm-cifar's UNet in bf16, the
tests' models), though a kernel may in principle sum in another order on one thread than on two. It is what
OpenVINO calls throughput streams; latency per batch is what one core gives, so it is for evaluation, where
only the total time counts. ``ZOO_CPU_STREAMS=1`` turns it off (any other number sets the count).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from .. import _config

if TYPE_CHECKING:
    import torch

__all__ = ["caller_modes", "cpu_streams", "map_in_streams"]

T = TypeVar("T")
R = TypeVar("R")


def cpu_streams(device: torch.device) -> int:
    """How many batches to run at once on `device`: one per intra-op thread on a CPU (``ZOO_CPU_STREAMS``
    overrides), one elsewhere (a GPU runs one batch at a time best)."""
    import torch

    if device.type != "cpu":
        return 1
    return _config.cpu_streams() or max(1, torch.get_num_threads())


def caller_modes(device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """The calling thread's grad mode (inference mode, no_grad) and autocast for `device`'s type, as a factory of
    contexts for worker threads: PyTorch keeps both per thread, so a worker starts without them."""
    import torch

    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()
    autocasting = torch.is_autocast_enabled(device.type)
    dtype = torch.get_autocast_dtype(device.type) if autocasting else None

    def modes() -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        if inference:
            stack.enter_context(torch.inference_mode())
        elif not grad:
            stack.enter_context(torch.no_grad())
        if autocasting:
            stack.enter_context(torch.autocast(device.type, dtype=dtype))
        return stack

    return modes


def map_in_streams(
    fn: Callable[[T], R], items: Iterable[T], streams: int, modes: Callable[[], contextlib.AbstractContextManager]
) -> Iterator[R]:
    """``fn(item)`` for every item, in order; with `streams` > 1 on that many worker threads of one intra-op
    thread each, at most ``2 * streams`` items in flight (memory stays a few batches).

    `modes` makes the context each worker's call runs under (usually :func:`caller_modes`): inference mode and
    autocast are per thread in PyTorch, so the caller's (which a single stream runs under) do not reach the
    workers. The caller's thread count is restored afterwards.
    """
    if streams <= 1:
        yield from map(fn, items)
        return
    import torch

    def call(item: T) -> R:
        with modes():
            return fn(item)

    threads = torch.get_num_threads()
    pool = ThreadPoolExecutor(streams, "zoo-stream", initializer=torch.set_num_threads, initargs=(1,))
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(call, item))
            if len(pending) >= 2 * streams:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
        torch.set_num_threads(threads)  # a worker's set_num_threads(1) also lowers torch's process-wide count
