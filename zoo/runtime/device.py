"""Device, precision and allocator choices shared by every runtime loop."""

from __future__ import annotations

import contextlib
import ctypes
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "PRECISIONS",
    "autocast",
    "available_devices",
    "check_device",
    "fuse_for_inference",
    "native_bf16",
    "resolve_precision",
    "tune_malloc",
]

PRECISIONS = ("auto", "fp32", "bf16")

_TUNED = False


def tune_malloc() -> None:
    """Keep glibc from returning large activation buffers to the OS after every batch.

    With the default dynamic mmap threshold, each batch's multi-megabyte tensors are mmap'd and unmapped
    again; measured on a 2-core CPU this put up to 60% of evaluation time in the kernel at batch 256.
    Raising the mmap and trim thresholds keeps those pages in the heap for reuse. No-op off glibc.
    """
    global _TUNED
    if _TUNED or not sys.platform.startswith("linux"):
        return
    _TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 512 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024)
    except (OSError, AttributeError):
        pass


def fuse_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """Fold BatchNorm into the preceding convolution (torch.fx), for evaluation only.

    Measured on ResNet-56, 2 CPU threads, channels_last: 541 -> 587 img/s at batch 64, outputs equal to
    within 4e-6. A model fx cannot trace is returned unchanged; the caller's model is never modified.
    """
    import warnings

    try:
        from torch.fx.experimental.optimization import fuse

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fuse(model)  # a traced copy
    except Exception:  # noqa: BLE001 - tracing fails on data-dependent control flow; that only costs speed
        return model


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on devices that support it, when asked; otherwise a no-op."""
    import torch

    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def native_bf16(device: torch.device) -> bool:
    """Whether `device` has bf16 matrix units, where bf16 autocast pays: CUDA compute capability 8.0+ (A100,
    H100, RTX 30xx on), or a CPU with AMX (``amx_bf16`` in /proc/cpuinfo: Intel Xeon since Sapphire Rapids).

    Measured on this project's machines: a ResNet-18 training step 2.8x faster in bf16 on an AMX Xeon, but
    4x slower on an AMD EPYC without native bf16 (docs/architecture.md #8), hence no bf16 on AVX512-BF16 alone.
    """
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu" and sys.platform.startswith("linux"):
        try:
            with open("/proc/cpuinfo") as f:
                return any(line.startswith("flags") and " amx_bf16" in line for line in f)
        except OSError:
            return False
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` where the device has native bf16 (:func:`native_bf16`), else ``fp32``."""
    from ..errors import ZooError

    if precision not in PRECISIONS:
        raise ZooError(f"Unknown precision {precision!r}; use one of: {', '.join(PRECISIONS)}.")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def available_devices() -> list[str]:
    """The devices this machine can run on: ``cpu``, each CUDA GPU (``cuda:0``...), ``mps``, ``xpu``."""
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    if getattr(torch, "xpu", None) is not None and torch.xpu.is_available():
        found.append("xpu")
    return found


def check_device(device: str | torch.device | None) -> None:
    """Refuse a device this machine does not have, or a misspelt one, in one line that names those it has.

    Without this, ``--device cuda`` on a CPU-only machine failed deep inside loading the weights ("Found no
    NVIDIA driver"), and ``--device cpuu`` with torch's list of twenty device types (#19). None and ``"auto"``
    (the best available, see ``zoo._builder.pick_device``) always pass; torch is imported only otherwise.
    """
    if device is None or str(device) == "auto":
        return
    import torch

    from ..errors import ZooError

    try:
        wanted = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        wanted = None
    if wanted is not None and wanted.type == "cpu":
        return
    have = available_devices()
    if wanted is not None:
        if wanted.type == "cuda" and (f"cuda:{wanted.index}" in have if wanted.index is not None else "cuda:0" in have):
            return
        if wanted.type in ("mps", "xpu") and wanted.type in have:
            return
    problem = "is not available here" if wanted is not None else "is not a device"
    other = " (or another of those)" if len(have) > 1 else ""
    raise ZooError(
        f"Device {str(device)!r} {problem} (this machine has: {', '.join(have)}). "
        f"Use --device cpu{other} or leave it out."
    )
