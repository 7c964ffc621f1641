"""Decode image files to RGB uint8 tensors with torchvision's decoders, with errors that name the file."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..errors import ZooError

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["IMAGE_SUFFIXES", "ImageError", "decode_image", "read_image", "to_rgb"]

# torchvision 0.29 deprecates its decoders in favour of TorchCodec; they remain the fastest installed option
# here (libjpeg-turbo), and the PIL fallback below keeps working when they go. Decision: docs/architecture.md.
warnings.filterwarnings(
    "ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning
)

IMAGE_SUFFIXES: Final = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Pillow's own default (Image.MAX_IMAGE_PIXELS): about 0.25 GiB as RGB uint8. A 20000x20000 PNG of a few hundred
# KiB would otherwise be decoded to 1.2 GB (and a truncated one crashed torchvision's decoder) (#20).
DEFAULT_MAX_PIXELS: Final = 89_478_485


#: What to do about an unreadable image, where the command offers --skip-bad (predict, eval, finetune).
SKIP_HINT: Final = "Remove it, or pass --skip-bad to skip unreadable files."


class ImageError(ZooError):
    """An image that cannot be decoded: the message names the file (`reason`), then says what to do (`hint`).

    The two are kept apart so that a record of a skipped image carries the reason alone: a hint to pass
    --skip-bad, shown after it was passed, read as if it had not been (#19)."""

    def __init__(self, reason: str, hint: str = SKIP_HINT) -> None:
        super().__init__(f"{reason} {hint}" if hint else reason)
        self.reason, self.hint = reason, hint


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
    limit = max_pixels()
    _check_pixels(data, name, limit)
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

    Image.MAX_IMAGE_PIXELS = max_pixels() or None
    try:
        with warnings.catch_warnings():  # Pillow warns between the limit and twice it; we refuse instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                _refuse_pixels(im.size[0], im.size[1], name, max_pixels())
                rgb = to_rgb(im)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        import re

        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        reason = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", reason)
        raise ImageError(f"Cannot read image {name}: not a decodable image ({reason}).") from None
    return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)


#: Pillow's 16-bit and 32-bit integer modes: 16-bit PNGs and TIFFs open as one of these.
_WIDE_INTEGER_MODES: Final = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})


def to_rgb(image: Image.Image) -> Image.Image:
    """A PIL image of any mode -> RGB, as :func:`decode_image` reads files: palette expanded, alpha dropped (not
    composited), grayscale repeated, CMYK and YCbCr converted, 16-bit values scaled to 8 bits (``>> 8``).

    The one conversion for PIL images, shared by the file decoder's PIL fallback and ``zoo.transforms`` (which
    crashed on RGBA, CMYK and LA images, and read a palette image's indices as gray levels, #19). Pillow's own
    ``convert("RGB")`` clips 16-bit values at 255, where torchvision's PNG decoder scales them: the scaling here
    matches torchvision. Always a new, loaded image (an RGB one too): the caller may close the file it came from.
    """
    if image.mode in _WIDE_INTEGER_MODES:
        import numpy as np
        from PIL import Image

        wide = np.asarray(image).astype(np.int64)  # I;16B is big-endian, I is int32: one dtype for all
        gray = (np.clip(wide, 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    return image.convert("RGB")


def max_pixels() -> int:
    """`ZOO_MAX_IMAGE_PIXELS` (default Pillow's 89,478,485; 0 = no limit): the most pixels an image may have."""
    import os

    raw = os.environ.get("ZOO_MAX_IMAGE_PIXELS", "").strip()
    try:
        return int(raw) if raw else DEFAULT_MAX_PIXELS
    except ValueError:
        raise ZooError(f"ZOO_MAX_IMAGE_PIXELS={raw!r} is not a whole number.") from None


def _refuse_pixels(width: int, height: int, name: str, limit: int) -> None:
    if limit and width * height > limit:
        raise ImageError(
            f"Cannot read image {name}: {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{limit:,} (a decompression bomb?). Set ZOO_MAX_IMAGE_PIXELS to a larger number (0: no "
            "limit) if the image is genuine.",
            hint="",  # the message says what to do
        )


def _header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header without decoding; None for other formats (Pillow reads those)."""
    import struct

    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        return struct.unpack(">II", data[16:24])
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 <= len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame segment
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return width, height
            i += 2 + length
    return None


def _check_pixels(data: bytes, name: str, limit: int) -> None:
    """Refuse an image whose header promises more than `limit` pixels, before any decoder allocates them."""
    if not limit:
        return
    size = _header_size(data)
    if size is None:  # WebP, BMP, TIFF...: Pillow reads the size from the header lazily, without decoding
        import io

        from PIL import Image

        Image.MAX_IMAGE_PIXELS = limit  # Pillow's own bomb check (which refuses past twice this) follows ours
        try:
            with warnings.catch_warnings():  # Pillow warns between the limit and twice it; we refuse instead
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as im:
                    size = im.size
        except Image.DecompressionBombError as exc:
            raise ImageError(
                f"Cannot read image {name}: {exc} Set ZOO_MAX_IMAGE_PIXELS to a larger number (0: no "
                "limit) if the image is genuine.",
                hint="",
            ) from None
        except Exception:  # noqa: BLE001 - not for us to judge here: the decoders below report it
            return
    _refuse_pixels(size[0], size[1], name, limit)


def read_image(path: str | Path) -> torch.Tensor:
    """Read and decode one image file (see :func:`decode_image`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"Cannot read image {path}: {exc.strerror or exc}.", hint="") from None
    return decode_image(data, name=str(path))
