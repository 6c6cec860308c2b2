"""Time the 2-D projection backends of `embedkit view` side by side on the same codes.

    python benchmarks/bench_view.py                   # 20000 x 512 synthetic codes (20 classes)
    python benchmarks/bench_view.py --n 5000 --skip sklearn
    python benchmarks/bench_view.py --codes STORE     # a real code store instead
    python benchmarks/bench_view.py --only-large      # the bounded-memory policy only (100000 x 512, fit 5000)

CPU backends: umap-learn (UMAP), openTSNE and scikit-learn (t-SNE), scikit-learn PCA.
GPU backends (cuML UMAP / TSNE / PCA) are timed too when CUDA and cuML are present.
Every run goes through embedkit.view.project (PCA to 50 dims first, same seed), so
the figures are what a user of `embedkit view` waits for (after a warm-up run on
300 rows, so one-off imports and numba compilation are not counted). Printed per backend:
seconds, points/s, ratio to the slowest, and the 5-NN accuracy of the 2-D map
(does the map keep the classes apart?). Results are appended to
benchmarks/results/bench_view.txt.

The large rows (``--large N``, default 100000 x 512 written to a temporary memory-mapped
.npy, so the codes are not in RAM) time the policy `embedkit view` uses above
``--max-points``: fit on a seeded sample of ``--fit`` rows and transform the rest in
chunks (UMAP, PCA), or project the sample only (t-SNE). Printed per row: seconds,
points/s, the peak of NumPy/Python allocations (tracemalloc) next to the size of
all the codes, and the 5-NN accuracy of the map on a sample of its points.

Recorded (benchmarks/results/bench_view.txt), 20000 x 512, 2 shared CPU cores, no GPU:
umap-learn 61.6 s, openTSNE 77.7 s, scikit-learn TSNE 254.9 s (openTSNE 3.3x faster than it),
PCA 0.4 s; every non-linear map keeps the 20 classes apart (5-NN acc 1.000 vs 0.488 for PCA).
Bounded-memory rows, --large 200000 --fit 10000 (410 MB of codes, memory-mapped; the machine shared and
loaded, 13.5 min in all, max RSS 1.85 GB with numba/LLVM and the mapped pages): UMAP fit 10000 + transform
190000 in 337.8 s (fit 27.9 s; umap-learn's transform places ~600 points/s here, so 1M rows take ~30 min),
traced peak 1074 MB (inside umap-learn: its transform alone peaks ~1.2 KB/point on a 16k chunk; not yet
explained), 5-NN acc 0.949; PCA fit 10000 + transform all 2.8 s, peak 69 MB; openTSNE on the 10000-row
sample only 346 s (load: 77.7 s for 20k unloaded), peak 66 MB, 5-NN acc 1.000.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np

from embedkit.device import cuda_available, has_module
from embedkit.view.project import UMAP_APPROX_REST, project

LARGE_RUNS = [("umap", "umap-learn", "transform"), ("pca", "sklearn", "transform"), ("tsne", "opentsne", "drop")]
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


def large_codes(path: Path, n: int, d: int, k: int, seed: int = 0, chunk: int = 50_000):
    """``synthetic_codes`` written chunk by chunk to a .npy opened memory-mapped (never all in RAM)."""
    from numpy.lib.format import open_memmap

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32)
    y = rng.integers(k, size=n)
    x = open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    for i in range(0, n, chunk):
        part = y[i:i + chunk]
        x[i:i + len(part)] = np.maximum(centres[part] + 2.0 * rng.normal(size=(len(part), d)).astype(np.float32), 0)
    x.flush()
    del x
    return np.load(path, mmap_mode="r"), y


def bench_large(args, skip) -> list[str]:
    """Rows for the sample-fit-transform policy on a larger memory-mapped array."""
    import tempfile
    import tracemalloc

    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        x, y = large_codes(Path(tmp) / "codes.npy", args.large, args.d, args.classes, args.seed)
        full_mb = x.shape[0] * x.shape[1] * 4 / 1e6
        for method, backend, rest in LARGE_RUNS:
            if backend in skip or method not in args.methods:
                continue
            # Warm-up: imports and numba JIT (umap-learn's approximate index and transform too) are not counted.
            warm = 300 + (UMAP_APPROX_REST + 1 if method == "umap" else 0)
            project(np.asarray(x[:warm]), method, backend=backend, seed=args.seed, max_points=300, rest=rest)
            tracemalloc.start()
            t0 = time.perf_counter()
            p = project(x, method, backend=backend, seed=args.seed, max_points=args.fit, rest=rest)
            dt = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1] / 1e6
            tracemalloc.stop()
            acc = map_knn_acc(p.xy, y[p.indices])
            fit = p.params.get("fit_seconds")
            line = (f"  large {method:5s} {backend:11s} {rest:9s} fit {p.params['n_fit']} of {x.shape[0]}: "
                    f"{dt:7.1f} s ({'fit %.1f s, ' % fit if fit is not None else ''}{len(p.xy) / dt:7.0f} points/s, "
                    f"{len(p.xy)} points out)  peak {peak:6.1f} MB (all codes {full_mb:.0f} MB)  map 5-NN acc {acc:.3f}")
            print(line, flush=True)
            lines.append(line)
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--classes", type=int, default=20)
    ap.add_argument("--codes", default=None, help="a code store to use instead of synthetic codes")
    ap.add_argument("--skip", nargs="*", default=[], help="backends to skip, e.g. sklearn")
    ap.add_argument("--methods", nargs="*", default=["umap", "tsne", "pca"], help="methods to time (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--large", type=int, default=100_000, help="rows of the bounded-memory rows (0: skip them)")
    ap.add_argument("--fit", type=int, default=5_000, help="fit sample of the bounded-memory rows")
    ap.add_argument("--only-large", action="store_true", help="time only the bounded-memory rows")
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
    runs = [r for r in runs if r[0] in args.methods]
    head = (f"# {time.strftime('%Y-%m-%d')} {x.shape[0]} x {x.shape[1]} codes ({what}); "
            f"{platform.processor() or platform.machine()}, cuda={cuda_available()}")
    print(head)
    rows = []
    if args.only_large:
        runs = []
    for method, backend in runs:
        # Warm-up on a few rows first: imports and numba/JIT compilation are paid once per process, not per map.
        project(x[:300], method, backend=backend, seed=args.seed, pca_dims=min(50, x.shape[1]))
        t0 = time.perf_counter()
        p = project(x, method, backend=backend, seed=args.seed, max_points=len(x))
        dt = time.perf_counter() - t0
        rows.append((method, backend, dt, map_knn_acc(p.xy, y[p.indices])))
        print(f"  {method:5s} {backend:11s} {dt:8.1f} s  {len(x) / dt:9.0f} points/s  map 5-NN acc {rows[-1][3]:.3f}",
              flush=True)
    slowest = max((r[2] for r in rows), default=1.0)
    lines = [head] + [f"  {m:5s} {b:11s} {dt:8.1f} s  {slowest / dt:6.1f}x vs slowest  map 5-NN acc {acc:.3f}"
                      for m, b, dt, acc in rows]
    print("\n".join(lines[1:]))
    if args.large:
        lines.append(f"  bounded memory: {args.large} x {args.d} memory-mapped codes ({args.classes} classes), "
                     f"fit on {args.fit}")
        lines += bench_large(args, args.skip)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {out}")


if __name__ == "__main__":
    main()
