"""Ray's overhead on one machine: the same images through ``--engine local`` and ``--engine ray``.

Prints images/s of each engine and their ratio, measured side by side in one run (alternating, best of
``--repeat``), and checks that both stores hold the same rows. Target: ray >= 0.8x local. On a CUDA
machine the same runs use the GPU (one actor with ``num_gpus=1``).

    python benchmarks/bench_engines.py --images 2000 --out benchmarks/results/bench_engines.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(root: Path, n: int, size: int = 256, seed: int = 0) -> None:
    """``n`` JPEG photos-like images (noise + shapes) in 10 class folders."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"c{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        arr = np.clip(rng.normal(128, 50, (size * 3 // 4, size, 3)), 0, 255).astype(np.uint8)
        y, x = rng.integers(0, size // 2, 2)
        arr[y:y + size // 4, x:x + size // 3] = rng.integers(0, 255, 3)
        Image.fromarray(arr).save(folder / f"img{i:05d}.jpg", quality=90)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--weights", default="default")
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray cluster")
    ap.add_argument("--size", type=int, default=256, help="width of the generated images (toy runs: smaller)")
    ap.add_argument("--out", default=None, help="Also write the figures to this file.")
    args = ap.parse_args(argv)

    import ray

    import embedkit
    from embedkit.device import cuda_available

    tmp = Path(tempfile.mkdtemp(prefix="bench_engines_"))
    lines = []

    def say(s=""):
        print(s, flush=True)
        lines.append(s)

    try:
        make_images(tmp / "imgs", args.images, size=args.size)
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        say(f"# bench_engines: {args.images} JPEG images {args.size}x{args.size * 3 // 4}, {args.backbone}, "
            f"{'CUDA' if cuda_available() else 'CPU'}, {os.cpu_count()} cores, python {platform.python_version()}")
        best = {"local": 0.0, "ray": 0.0}
        stores = {}
        for r in range(args.repeat):
            for engine in ("local", "ray"):  # alternating: both see the same machine state
                out = tmp / f"{engine}{r}"
                t0 = time.perf_counter()
                res = embedkit.embed(tmp / "imgs", out, args.backbone, weights=args.weights, engine=engine,
                                     progress=False)
                dt = time.perf_counter() - t0
                rate = args.images / dt
                best[engine] = max(best[engine], rate)
                stores[engine] = res.store
                say(f"run {r} {engine:5s}: {dt:7.1f} s  {rate:7.1f} images/s  ({len(res.store)} rows, "
                    f"{len(res.store.shards)} shards)")
        a, b = stores["local"], stores["ray"]
        same = a.paths.tolist() == b.paths.tolist()
        diff = float(np.abs(np.asarray(a.codes) - np.asarray(b.codes)).max())
        say(f"same rows in the same order: {same}; max |code difference|: {diff:.2e}")
        ratio = best["ray"] / best["local"]
        say(f"best images/s: local {best['local']:.1f}, ray {best['ray']:.1f}; ratio ray/local = {ratio:.2f} "
            f"(target >= 0.80: {'met' if ratio >= 0.8 else 'NOT met'})")
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
