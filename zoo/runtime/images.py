"""Decode image files to RGB uint8 tensors with torchvision's decoders, with errors that name the file."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..errors import ZooError

if TYPE_CHECKING:
    import torch

__all__ = ["IMAGE_SUFFIXES", "ImageError", "decode_image", "read_image"]

# torchvision 0.29 deprecates its decoders in favour of TorchCodec; they remain the fastest installed option
# here (libjpeg-turbo), and the PIL fallback below keeps working when they go. Decision: docs/architecture.md.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)

IMAGE_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


class ImageError(ZooError):
    """An image that cannot be decoded: the message names the file."""


def decode_image(data: bytes, *, name: str) -> torch.Tensor:
    """Bytes of an image file -> a 3xHxW uint8 RGB tensor.

    Grayscale and palette images are expanded to RGB, alpha is dropped, 16-bit PNGs are scaled to 8 bits.
    torchvision's decoders (libjpeg-turbo, libpng, libwebp) do JPEG/PNG/GIF/WebP; PIL handles the rest (BMP,
    TIFF).
    """
    import torch
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_image as tv_decode

    if not data:
        raise ImageError(f"Cannot read image {name}: the file is empty.")
    try:
        image = tv_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError) as exc:
        image = _decode_with_pil(data, name, exc)
    if image.dtype == torch.uint16:  # 16-bit PNG
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    if image.dim() == 4:  # an animated GIF: its first frame
        image = image[0]
    return image.contiguous()


def _decode_with_pil(data: bytes, name: str, first_error: Exception) -> torch.Tensor:
    import io

    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        import re

        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        reason = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", reason)
        raise ImageError(f"Cannot read image {name}: not a decodable image ({reason}). "
                         f"Remove it, or pass --skip-bad to skip unreadable files.") from None
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


def read_image(path: str | Path) -> torch.Tensor:
    """Read and decode one image file (see :func:`decode_image`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"Cannot read image {path}: {exc.strerror or exc}.") from None
    return decode_image(data, name=str(path))
