"""Make the FastestDet weights shipped in ``zoo_detector/weights/`` from the upstream COCO checkpoint, reproducibly.

    python -m zoo_detector.convert_fastestdet --out plugins/zoo_detector/weights/ [--mirror DIR | --source FILE]

The pickle is read only after its sha256 matched, and only through zoo's conversion path
(``zoo._convert.convert_checkpoint``: ``torch.load(weights_only=True)``); floating tensors are cast to float16
there as ``zoo convert --dtype float16`` does. The provenance written into the file names the source, not the
zoo version or a date, so the same checkpoint always gives the same bytes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["LICENSE_NAME", "OUTPUT_NAME", "SOURCE_NAME", "SOURCE_SHA256", "SOURCE_URI", "convert", "main"]

COMMIT = "50473cd155cb088aa4a99e64ff6a4b3c24fa07e1"
SOURCE_NAME = "weight_AP05:0.253207_280-epoch.pth"
SOURCE_URI = f"https://github.com/dog-qiuqiu/FastestDet/raw/{COMMIT}/weights/weight_AP05%3A0.253207_280-epoch.pth"
SOURCE_SHA256 = "7f688d478ee474c82dbdb9c10e0ede2f8f3cf5d603f0825d2efd925eb561d05e"
OUTPUT_NAME = "fastestdet-coco-fp16.safetensors"
LICENSE_NAME = "LICENSE-FastestDet.md"
_DEFAULT_MIRROR = Path(__file__).resolve().parents[2].parent / "shared" / "weights" / "fastestdet"


def convert(source: Path, output: Path, *, float16: bool = True) -> str:
    """Verify `source` (the upstream checkpoint), convert it to safetensors at `output`; returns the output sha256.

    Upstream's state-dict keys are zoo's (``build_fastestdet`` uses upstream's module names), so no renaming.

    Raises:
        WeightsError: the file is not the expected checkpoint (sha256), or not a plain tensor pickle.
    """
    import torch

    from zoo._card import ConvertSpec
    from zoo._convert import convert_checkpoint
    from zoo._hashing import sha256_file
    from zoo.errors import WeightsError

    actual = sha256_file(source)
    if actual != SOURCE_SHA256:
        raise WeightsError(f"{source}: sha256 {actual}, expected {SOURCE_SHA256} (upstream {SOURCE_NAME}); not read.")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".partial")
    try:
        convert_checkpoint(
            source,
            tmp,
            ConvertSpec(),
            name=SOURCE_NAME,
            metadata={"source_uri": SOURCE_URI, "source_sha256": SOURCE_SHA256, "source_format": "torch-pickle"},
            dtype=torch.float16 if float16 else None,
        )
        os.replace(tmp, output)
        output.chmod(0o644)  # the temporary file was private; a shipped file is world-readable
    finally:
        tmp.unlink(missing_ok=True)
    return sha256_file(output)


def write_license(upstream_license: Path, output: Path) -> None:
    """Upstream's BSD-3 text, with a first line saying what it covers (clause 2: binaries carry the notice)."""
    header = (
        f"This notice covers `{OUTPUT_NAME}` in this directory (converted from {SOURCE_URI}) and the "
        "FastestDet architecture, decoding and loss in `zoo_detector/fastestdet.py`, written after "
        f"github.com/dog-qiuqiu/FastestDet at commit {COMMIT}. Upstream's LICENSE.md follows unchanged.\n\n"
    )
    output.write_text(header + upstream_license.read_text(encoding="utf-8"), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zoo_detector.convert_fastestdet",
        description="Make the shipped FastestDet weights from the upstream checkpoint.",
    )
    parser.add_argument("--out", type=Path, required=True, help="directory for the .safetensors and the license")
    parser.add_argument(
        "--mirror",
        type=Path,
        help=f"directory holding the upstream files (default: $ZOO_MIRROR, else {_DEFAULT_MIRROR})",
    )
    parser.add_argument("--source", type=Path, help=f"the checkpoint itself (default: MIRROR/{SOURCE_NAME})")
    parser.add_argument("--float32", action="store_true", help="keep float32 (writes fastestdet-coco.safetensors)")
    args = parser.parse_args(argv)

    mirror = args.mirror or Path(os.environ.get("ZOO_MIRROR") or _DEFAULT_MIRROR)
    source = args.source or mirror / SOURCE_NAME
    if not source.is_file():
        parser.error(f"{source} not found; pass --source or --mirror (upstream URL: {SOURCE_URI}).")
    output = args.out / (OUTPUT_NAME if not args.float32 else OUTPUT_NAME.replace("-fp16", ""))
    from zoo.errors import ZooError

    try:
        digest = convert(source, output, float16=not args.float32)
    except ZooError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    license_src = source.with_name("LICENSE.md")
    if license_src.is_file():
        write_license(license_src, args.out / LICENSE_NAME)
    else:
        print(f"warning: {license_src} not found; {LICENSE_NAME} not written", file=sys.stderr)
    print(f"{output}  sha256 {digest}  {output.stat().st_size} bytes  (source sha256 {SOURCE_SHA256})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
