"""Convert a third-party PyTorch checkpoint into a safetensors state dict, without running its pickle.

The file is opened with ``torch.load(weights_only=True)``: torch's restricted unpickler, which builds
tensors and plain containers and refuses any other global (so a ``__reduce__`` payload never runs).
Callers convert only files whose sha256 already matched the card.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._card import ConvertSpec
from .errors import WeightsError

if TYPE_CHECKING:
    import torch

__all__ = ["cast_floating", "content_digest", "convert_checkpoint", "extract_state_dict"]


def _unpickler_reason(exc: BaseException) -> str:
    """The useful sentence of torch's error, without its advice to retry with weights_only=False."""
    text = str(exc).split("WeightsUnpickler error:")[-1]
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    kept = [
        p
        for p in paragraphs
        if p and not p.startswith(("Weights only load failed", "Check the documentation", "Please file an issue"))
    ]
    reason = "; ".join(kept) or type(exc).__name__
    return reason if len(reason) <= 200 else reason[:197] + "..."


def _is_safetensors(path: Path) -> bool:
    """A safetensors file opens with its header's length (8 bytes, little-endian) and then the JSON header."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _read_checkpoint(path: Path, name: str) -> Any:
    import torch

    if _is_safetensors(path):  # no pickle inside; lets `zoo convert` re-key or re-cast a safetensors file
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{name}: not a readable safetensors file ({exc}).") from None
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing them
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError, ValueError, EOFError) as exc:
        raise WeightsError(
            f"Refused to load {name}: it is not a plain tensor checkpoint that torch's safe loader "
            f"(weights_only=True) accepts ({_unpickler_reason(exc)}). zoo never runs arbitrary pickle code; "
            f"convert it yourself in a trusted environment and save it with safetensors."
        ) from None


def extract_state_dict(obj: Any, spec: ConvertSpec, *, source: str) -> dict[str, torch.Tensor]:
    """Pick the state dict out of a checkpoint object and apply the card's key remapping."""
    import torch

    if spec.key is not None:
        if not isinstance(obj, Mapping) or spec.key not in obj:
            keys = ", ".join(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
            raise WeightsError(f"{source}: checkpoint has no entry {spec.key!r} (it has: {keys}).")
        obj = obj[spec.key]
    elif isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model", "module"):  # common trainer layouts
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{source}: expected a dict of tensors, got {type(obj).__name__}.")
    state: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"{source}: entry {key!r} holds a {type(value).__name__}, not a tensor. Name the "
                "entry that holds the state dict: 'convert: {key: ...}' on the card, or "
                "'zoo convert --key ...'."
            )
        new_key = str(key)
        if spec.strip_prefix and new_key.startswith(spec.strip_prefix):
            new_key = new_key[len(spec.strip_prefix) :]
        for pattern, repl in spec.rename:
            new_key = re.sub(pattern, repl, new_key)
        if new_key in state:
            raise WeightsError(f"{source}: key remapping maps two tensors onto {new_key!r}.")
        # safetensors refuses tensors that share storage; a contiguous clone owns its bytes.
        state[new_key] = value.detach().contiguous().clone()
    return state


def content_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes: lets `zoo cache verify` check a converted file."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():  # a byte view works for every dtype, bfloat16 included
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


PROVENANCE_KEY = "zoo"


def read_provenance(path: Path) -> dict[str, str] | None:
    """The provenance a converted file carries, or None (not converted by zoo, or unreadable)."""
    import json

    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get(PROVENANCE_KEY)
        return json.loads(raw) if raw else None
    except Exception:  # noqa: BLE001 - a damaged header reads as "no provenance"
        return None


def cast_floating(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Floating tensors to `dtype`; integer ones (BatchNorm's num_batches_tracked) keep theirs."""
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def convert_checkpoint(
    src: Path,
    dst: Path,
    spec: ConvertSpec,
    *,
    metadata: dict[str, str],
    name: str | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Write `src` (a pickled checkpoint whose hash was checked, or a safetensors file) as safetensors to `dst`.

    Args:
        name: how to call the file in messages (the URI's file name rather than a cache path).
        dtype: cast floating tensors to this (fp16 halves a file; zoo.load casts back to the model's dtype).
    """
    from safetensors.torch import save

    name = name or src.name
    state = extract_state_dict(_read_checkpoint(src, name), spec, source=name)
    if dtype is not None:
        state = cast_floating(state, dtype)
        metadata = {**metadata, "dtype": str(dtype).removeprefix("torch.")}
    import json

    provenance = {**metadata, "content_sha256": content_digest(state)}
    # One key holding sorted JSON: safetensors writes metadata in hash-map order, so several keys would give a
    # different header (and sha256) on every run for the same checkpoint.
    data = save(state, metadata={PROVENANCE_KEY: json.dumps(provenance, sort_keys=True)})
    _write_output(dst, data)


def _write_output(dst: Path, data: bytes) -> None:
    """Write the converted file without following a link at `dst` (#20); a full disk is one line, and the
    half-written file is removed."""
    import errno
    import os

    from ._hashing import open_nofollow

    try:
        with os.fdopen(open_nofollow(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        if os.path.isfile(dst) and not os.path.islink(dst):
            os.unlink(dst)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise WeightsError(
                f"Cannot write {dst}: {os.strerror(exc.errno)} (disk full or file size limit; "
                f"the converted file needs {len(data)} bytes). Free some space and try again; "
                "nothing half-written was kept."
            ) from None
        raise
