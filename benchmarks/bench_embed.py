"""Embedding throughput: embedkit vs a per-image loop vs the forward-only ceiling, measured in one run.

    python benchmarks/bench_embed.py [IMAGES] [--backbone efficientnet_lite0] [--n 256] [--batch-size 32]

Prints three figures on the same images and model:
  1. embedkit.embed (DataLoader workers decoding, batched inference, chunked memmap writes)
  2. a plain loop: PIL open -> transform -> forward of the same network (default memory format,
     torch.no_grad), one image at a time
  3. forward only on preloaded tensors in batches (the compute ceiling)
and the ratios embedkit / ceiling (target >= 0.90 on CPU, >= 0.85 on CUDA) and embedkit / loop
(target >= 3 on CPU). On CUDA it also runs embedkit with --gpu-decode off/on where available.
Figures measured are kept in benchmarks/results/bench_embed.txt.
"""

from __future__ import annotations

import argparse
import copy
import shutil
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

import embedkit
from embedkit.io.discover import discover
from embedkit.io.loader import default_batch_size
from embedkit.io.decode import to_rgb

HERE = Path(__file__).resolve().parent


def _default_images() -> Path:
    shared = HERE.parent.parent / "shared" / "datasets" / "emoji-dev"
    return shared if shared.is_dir() else HERE.parent / "embedkit" / "data" / "demo" / "images"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="?", default=str(_default_images()))
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--layer", default=None)
    ap.add_argument("--n", type=int, default=256, help="images to use (repeated if the folder has fewer)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--device-decode", action="store_true", help="also time decode='device' (always on CUDA)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds (best of each kept)")
    args = ap.parse_args(argv)

    items = discover(args.images)
    paths = [items[i % len(items)].path for i in range(args.n)]
    bb = embedkit.Backbone(args.backbone, args.layer, device=args.device)
    bs = args.batch_size or default_batch_size(bb.device)
    tf = bb.transform
    sync = torch.cuda.synchronize if bb.device.type == "cuda" else (lambda: None)
    print(f"backbone {bb.name}/{bb.layer} dim {bb.dim} on {bb.device}, {args.n} images from {args.images}, "
          f"batch {bs}, torch threads {torch.get_num_threads()}")

    # warm-up (first-call allocations, cudnn autotune)
    bb.forward(torch.stack([tf(to_rgb(Image.open(p))) for p in paths[:bs]]))
    sync()

    x = torch.stack([tf(to_rgb(Image.open(p))) for p in paths])
    if bb.device.type == "cuda":
        x = x.pin_memory()
    n_loop = min(len(paths), 64)
    tmp = Path(tempfile.mkdtemp())
    lst = tmp / "list.txt"
    lst.write_text("\n".join(paths))  # a list file, so repeated paths are embedded too

    def ceiling_run():  # 3. forward only on preloaded tensors
        for i in range(0, len(x), bs):
            bb.forward(x[i:i + bs])
        return len(x)

    # 2. what a user writes without embedkit: the same network in its default memory format,
    # one image at a time through PIL and the float transform.
    plain = copy.deepcopy(bb.model).to(memory_format=torch.contiguous_format).eval()

    def loop_run():
        with torch.no_grad():
            for p in paths[:n_loop]:
                plain(tf(to_rgb(Image.open(p)))[None].to(bb.device))
        return n_loop

    def embedkit_run(decode="cpu"):  # 1. embedkit
        shutil.rmtree(tmp / "store", ignore_errors=True)
        res = embedkit.embed(lst, tmp / "store", bb, batch_size=bs, workers=args.workers, progress=False,
                             decode=decode)
        assert len(res.store) == len(paths)
        return len(paths)

    # Interleaved rounds, best of each: a noisy machine slows all three alike instead of one.
    runs = [("embedkit", embedkit_run), ("loop", loop_run), ("ceiling", ceiling_run)]
    if bb.device.type == "cuda" or args.device_decode:  # GPU decode on/off (JPEGs only; others use PIL)
        runs.append(("embedkit, device decode", lambda: embedkit_run("device")))
    rates = {name: [] for name, _ in runs}
    try:
        for _ in range(args.rounds):
            for name, fn in runs:
                t = time.perf_counter()
                n = fn()
                sync()
                rates[name].append(n / (time.perf_counter() - t))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ours, loop, ceiling = (max(rates[k]) for k in ("embedkit", "loop", "ceiling"))

    print(f"embedkit           {ours:8.1f} images/s")
    if "embedkit, device decode" in rates:
        dd = max(rates["embedkit, device decode"])
        print(f"embedkit, device decode {dd:8.1f} images/s ({dd / ours:.2f}x PIL decode; JPEG inputs only benefit)")
    print(f"per-image loop     {loop:8.1f} images/s")
    print(f"forward-only       {ceiling:8.1f} images/s (ceiling)")
    print(f"embedkit / ceiling {ours / ceiling:8.2f}  (target >= {0.85 if bb.device.type == 'cuda' else 0.90})")
    print(f"embedkit / loop    {ours / loop:8.2f}  (target >= 3 on CPU)")


if __name__ == "__main__":
    main()
