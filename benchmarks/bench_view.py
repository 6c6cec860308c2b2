"""Time the 2-D projection backends of `embedkit view` side by side on the same codes.

    python benchmarks/bench_view.py                   # 20000 x 512 synthetic codes (20 classes)
    python benchmarks/bench_view.py --n 5000 --skip sklearn
    python benchmarks/bench_view.py --codes STORE     # a real code store instead

CPU backends: umap-learn (UMAP), openTSNE and scikit-learn (t-SNE), scikit-learn PCA.
GPU backends (cuML UMAP / TSNE / PCA) are timed too when CUDA and cuML are present.
Every run goes through embedkit.view.project (PCA to 50 dims first, same seed), so
the figures are what a user of `embedkit view` waits for (after a warm-up run on
300 rows, so one-off imports and numba compilation are not counted). Printed per backend:
seconds, points/s, ratio to the slowest, and the 5-NN accuracy of the 2-D map
(does the map keep the classes apart?). Results are appended to
benchmarks/results/bench_view.txt.

Recorded (benchmarks/results/bench_view.txt), 20000 x 512, 2 shared CPU cores, no GPU:
umap-learn 61.6 s, openTSNE 77.7 s, scikit-learn TSNE 254.9 s (openTSNE 3.3x faster than it),
PCA 0.4 s; every non-linear map keeps the 20 classes apart (5-NN acc 1.000 vs 0.488 for PCA).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from embedkit.device import cuda_available, has_module
from embedkit.view.project import project

CPU_RUNS = [("umap", "umap-learn"), ("tsne", "opentsne"), ("tsne", "sklearn"), ("pca", "sklearn")]
GPU_RUNS = [("umap", "cuml"), ("tsne", "cuml"), ("pca", "cuml")]


def synthetic_codes(n: int, d: int, k: int, seed: int = 0):
    """``k`` overlapping Gaussian classes in ``d`` dims, non-negative like ReLU codes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32)
    y = rng.integers(k, size=n)
    x = centres[y] + 2.0 * rng.normal(size=(n, d)).astype(np.float32)
    return np.maximum(x, 0).astype(np.float32), y


def map_knn_acc(xy, y, k=5, max_points=5000, seed=0):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    idx = np.random.default_rng(seed).permutation(len(xy))[:max_points]
    return float(cross_val_score(KNeighborsClassifier(k), xy[idx], y[idx], cv=3).mean())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--codes", default=None, help="a code store to use instead of synthetic codes")
    ap.add_argument("--skip", nargs="*", default=[], help="backends to skip, e.g. sklearn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_view.txt"))
    args = ap.parse_args(argv)

    if args.codes:
        from embedkit.store.codestore import CodeStore

        store = CodeStore.open(args.codes)
        x = np.asarray(store.codes[:args.n], np.float32)
        y = np.unique(store.labels[:args.n].astype(str), return_inverse=True)[1]
        what = f"store {Path(args.codes).name}"
    else:
        x, y = synthetic_codes(args.n, args.d, args.classes, args.seed)
        what = f"synthetic, {args.classes} classes"
    runs = [r for r in CPU_RUNS if r[1] not in args.skip]
    if cuda_available() and has_module("cuml"):
        runs += GPU_RUNS
    else:
        print("no CUDA device with cuML here: GPU backends not timed")
    head = (f"# {time.strftime('%Y-%m-%d')} {x.shape[0]} x {x.shape[1]} codes ({what}); "
            f"{platform.processor() or platform.machine()}, cuda={cuda_available()}")
    print(head)
    rows = []
    for method, backend in runs:
        # Warm-up on a few rows first: imports and numba/JIT compilation are paid once per process, not per map.
        project(x[:300], method, backend=backend, seed=args.seed, pca_dims=min(50, x.shape[1]))
        t0 = time.perf_counter()
        p = project(x, method, backend=backend, seed=args.seed, max_points=len(x))
        dt = time.perf_counter() - t0
        rows.append((method, backend, dt, map_knn_acc(p.xy, y[p.indices])))
        print(f"  {method:5s} {backend:11s} {dt:8.1f} s  {len(x) / dt:9.0f} points/s  map 5-NN acc {rows[-1][3]:.3f}",
              flush=True)
    slowest = max(r[2] for r in rows)
    lines = [head] + [f"  {m:5s} {b:11s} {dt:8.1f} s  {slowest / dt:6.1f}x vs slowest  map 5-NN acc {acc:.3f}"
                      for m, b, dt, acc in rows]
    print("\n".join(lines[1:]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {out}")


if __name__ == "__main__":
    main()
