"""Peak memory and cold speed of decoding a dataset for `zoo eval`: the streamed, memory-mapped decode cache
against the path it replaced (every decoded image in a Python list, then one torch.stack), on synthetic
256x256 JPEGs decoded with a 224-px classifier's geometry (resize 256, center crop 224).

Each measurement runs in a fresh subprocess and reports its peak resident memory (ru_maxrss), so the numbers
are the process's own and not polluted by the previous one. The anchor is the old path re-implemented here with
the same decoder and geometry calls, one thread, as zoo ran it before the task-contract issue: hash the files,
decode into a list, stack, write the safetensors cache.

    python bench/bench_memory.py --images 3000 10000 30000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
import torch
torch.set_num_threads(1)
from zoo.runtime.datasets import Geometry, _folder_items, load_dataset
from zoo.runtime.images import decode_image
root, mode = Path(sys.argv[1]), sys.argv[2]
geometry = Geometry(resize=256, crop=224)
start = time.perf_counter()
if mode == "list-and-stack":  # the path before (commit 23e871c): hash, list, stack, then the safetensors cache
    from safetensors.torch import save_file
    from zoo.runtime.datasets import content_key
    content_key(root, "before")
    images = [geometry.apply(decode_image(data, name=name)) for _, name, data in _folder_items(root)]
    images = torch.stack(images)
    n = len(images)
    save_file({{"images": images}}, str(Path(sys.argv[3]) / "before.safetensors"))
else:  # zoo's decode cache: cold (decode into the cache) or warm (map it)
    dataset = load_dataset(root, geometry=geometry)
    n = len(dataset)
    checksum = int(dataset.images[::max(1, n // 64)].sum())  # touch pages across the file
seconds = time.perf_counter() - start
print(json.dumps({{"n": n, "seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def make_images(root: Path, n: int) -> None:
    """n synthetic 256x256 JPEGs (smooth gradients plus noise, quality 90) in 10 class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:256, 0:256]
    for i in range(n):
        folder = root / f"class{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        base = (xs * rng.uniform(0.3, 1.0) + ys * rng.uniform(0.3, 1.0)) % 256
        pixels = np.stack([base, np.roll(base, 40, 0), np.roll(base, 80, 1)], -1)
        pixels = np.clip(pixels + rng.normal(0, 12, pixels.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)


def run(root: Path, mode: str, home: Path) -> dict:
    repo = str(Path(__file__).resolve().parents[1])
    env = {"ZOO_HOME": str(home), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    home.mkdir(parents=True, exist_ok=True)
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(repo=repo), str(root), mode, str(home)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[3000, 10000])
    parser.add_argument(
        "--skip-anchor-above",
        type=int,
        default=20000,
        help="Do not run the list-and-stack path above this many images (it needs ~2x the "
        "decoded size in RAM: 30,000 images at 224 px = 4.5 GB decoded).",
    )
    args = parser.parse_args()
    print(f"{'images':>7}  {'path':<24}  {'seconds':>8}  {'img/s':>7}  {'peak MiB':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.images:
            root = Path(tmp) / f"data{n}"
            make_images(root, n)
            rows = []
            if n <= args.skip_anchor_above:
                rows.append(("before: list + stack", run(root, "list-and-stack", Path(tmp) / "home-anchor")))
            home = Path(tmp) / f"home{n}"
            rows.append(("zoo: decode cache, cold", run(root, "zoo", home)))
            rows.append(("zoo: decode cache, warm", run(root, "zoo", home)))
            for name, r in rows:
                print(
                    f"{r['n']:>7}  {name:<24}  {r['seconds']:>8.1f}  {r['n'] / r['seconds']:>7.0f}  "
                    f"{r['peak_mib']:>9.0f}"
                )
            if len(rows) == 3:
                print(
                    f"         cold speed zoo / before: {rows[0][1]['seconds'] / rows[1][1]['seconds']:.2f}x; "
                    f"peak memory zoo / before: {rows[1][1]['peak_mib'] / rows[0][1]['peak_mib']:.2f}"
                )


if __name__ == "__main__":
    main()
