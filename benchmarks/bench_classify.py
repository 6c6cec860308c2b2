"""Grid search of SVM hyper-parameters: embedkit (precomputed kernels from one Gram matrix) vs GridSearchCV(SVC).

Both search the same folds x kernels x C x gamma grid on the same codes and are
scored by accuracy; the script prints both times, their ratio, both best
parameters/scores and the largest difference between the two CV score tables.

    python benchmarks/bench_classify.py                       # full size: 5000 x 1280, 3 folds x 2 x 5 x 5
    python benchmarks/bench_classify.py --n 1500 --jobs 2     # quick
    python benchmarks/bench_classify.py --sk-points 6         # sklearn on 6 grid points only, time extrapolated
    python benchmarks/bench_classify.py --store codes/        # real codes from a store
    python benchmarks/bench_classify.py --large 1000000 --dim 128 --workdir WORK   # classify train on a big store

Codes are synthetic by default: 10 classes of Gaussian clusters on a 64-d
subspace, lifted to D dims and passed through a ReLU (non-negative, correlated,
like CNN codes). Measured figures (2 CPU cores, details in benchmarks/results/bench_classify.txt):

    1500 x 1280, 50 points x 3 folds: embedkit 3.9 s, GridSearchCV(SVC) 128.2 s -> 32.8x, same best params and
        best score 0.882; 149/150 fold scores identical (one item differs at sigmoid C=1000, a non-PSD kernel
        where libsvm's solution moves with 1e-16 kernel rounding).
    5000 x 1280, same grid: embedkit 55.0 s; GridSearchCV(SVC) on 6 points 182.6 s -> ~1522 s extrapolated,
        ~28x; identical scores on those points.

`--large` (classify train on a fabricated store, child process, 2 shared CPU cores, --device cpu):

    1,000,000 x 128 (10 overlapping classes), --max-kernel-rows 5000 --components 512: fall-back chosen before
        reading codes (exact would need ~14,300 GiB); grid search on a 4,995-row subsample 44.8 s; Nystroem + SGD
        linear SVM on all 800,000 train+val rows; test top-1 0.441 / top-5 0.865 on 200,000 (logistic baseline
        on the subsample 0.363); 342 s wall, peak RSS 2.07 GiB.
    20,000 x 64, default budget (half of ~21 GiB available): exact kernel SVM on 16,002 rows, 364 s, peak RSS
        6.14 GiB (the plan's estimate 8 N^2 (1 + jobs) = 6.1 GB).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def synthetic_codes(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (k, 64))
    y = rng.integers(0, k, n)
    z = centres[y] + rng.normal(0, 2.5, (n, 64))  # overlapping classes: accuracy well below 1
    lift = rng.normal(0, 1 / 8, (64, d))
    return np.maximum(z @ lift + 0.2, 0).astype(np.float32), np.array([f"class{i}" for i in y], dtype=object)


def large_train(args):
    """Fabricate a store of ``args.large`` synthetic codes (in chunks) and time `embedkit classify train` on it
    in a child process, reporting its wall time and peak resident memory (bounded memory at 1M rows)."""
    import os
    import resource
    import subprocess
    import sys
    from pathlib import Path

    from embedkit.store.codestore import CodeStore

    work = Path(args.workdir)
    store_dir = work / f"store-{args.large}x{args.dim}"
    if not (store_dir / "meta.json").exists():
        work.mkdir(parents=True, exist_ok=True)
        raw = np.lib.format.open_memmap(work / "codes.tmp.npy", mode="w+", dtype=np.float32, shape=(args.large, args.dim))
        labels = np.empty(args.large, dtype=object)
        for i in range(0, args.large, 100_000):
            x, y = synthetic_codes(min(100_000, args.large - i), args.dim, args.classes, seed=i)
            raw[i:i + len(x)] = x
            labels[i:i + len(x)] = y
        raw.flush()
        paths = np.array([f"img/{i}.png" for i in range(args.large)], dtype=object)
        CodeStore.from_arrays(store_dir, raw, paths, labels)
        del raw
        os.remove(work / "codes.tmp.npy")
    cmd = [sys.executable, "-m", "embedkit", "classify", "train", str(store_dir), "-o", str(work / "model"),
           "--overwrite", "--quiet", "--jobs", str(args.jobs), "--device", "cpu", "--kernels", "rbf",
           "--C", "1,10", "--gamma", "scale"]
    if args.max_kernel_rows:
        cmd += ["--max-kernel-rows", str(args.max_kernel_rows)]
    if args.components:
        cmd += ["--components", str(args.components)]
    print(" ".join(cmd[1:]))
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    print(f"classify train on {args.large} x {args.dim}: {time.perf_counter() - t:.0f} s, peak RSS {peak:.2f} GiB "
          f"(codes on disk {args.large * args.dim * 4 / 2**30:.2f} GiB)")


def main(argv=None):
    from sklearn.model_selection import GridSearchCV, ParameterGrid, StratifiedKFold
    from sklearn.svm import SVC

    from embedkit.classify.gridsearch import grid_search_svm, param_grid, resolve_gammas

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="codes (rows)")
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--store", default=None, help="use the codes of this store instead of synthetic ones")
    ap.add_argument("--kernels", default="rbf,sigmoid")
    ap.add_argument("--C", dest="cs", default="0.1,1,10,100,1000")
    ap.add_argument("--gamma", dest="gammas", default="0.01*scale,0.1*scale,scale,10*scale,1e-4")
    ap.add_argument("--cv", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2, help="parallel jobs, the same for both")
    ap.add_argument("--gram-dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sk-points", type=int, default=0,
                    help="run GridSearchCV on this many grid points only (random, seeded) and extrapolate its time")
    ap.add_argument("--large", type=int, default=0,
                    help="instead: fabricate a store of this many rows and time `classify train` on it (peak memory)")
    ap.add_argument("--workdir", default="bench-classify-large", help="--large: where the store and model go")
    ap.add_argument("--max-kernel-rows", type=int, default=None, help="--large: passed to classify train")
    ap.add_argument("--components", type=int, default=None, help="--large: Nystroem components of the fall-back")
    args = ap.parse_args(argv)
    if args.large:
        return large_train(args)

    if args.store:
        from embedkit.store.codestore import CodeStore

        st = CodeStore.open(args.store)
        X, y = np.asarray(st.codes, np.float32)[: args.n], st.labels[: args.n]
    else:
        X, y = synthetic_codes(args.n, args.dim, args.classes)
    kernels = args.kernels.split(",")
    cs = [float(c) for c in args.cs.split(",")]
    gammas = [g if "scale" in g else float(g) for g in args.gammas.split(",")]
    folds = list(StratifiedKFold(args.cv, shuffle=True, random_state=0).split(X, y))
    grid = param_grid(kernels, cs, resolve_gammas(gammas, X))
    n_points = len(ParameterGrid(grid))
    print(f"{X.shape[0]} x {X.shape[1]} codes, {len(set(y))} classes; {args.cv} folds x {n_points} grid points; "
          f"{args.jobs} jobs")

    t = time.perf_counter()
    ours = grid_search_svm(X, y, kernels, cs, gammas, cv=folds, decision="ovo", n_jobs=args.jobs,
                           gram_dtype=args.gram_dtype, device=args.device, progress=True)
    t_ours = time.perf_counter() - t
    print(f"embedkit grid_search_svm: {t_ours:.1f}s  best {ours.best_params}  score {ours.best_score:.6f}")

    points = list(ParameterGrid(grid))
    subset = list(range(n_points))
    if 0 < args.sk_points < n_points:
        subset = sorted(np.random.default_rng(0).choice(n_points, args.sk_points, replace=False).tolist())
    sk_grid = [{k: [v] for k, v in points[i].items()} for i in subset]
    t = time.perf_counter()
    ref = GridSearchCV(SVC(), sk_grid, cv=folds, n_jobs=args.jobs).fit(X, y)
    t_sk = time.perf_counter() - t
    ours_scores = np.array([ours.rows[i]["mean_score"] for i in subset])
    diff = float(np.abs(ours_scores - ref.cv_results_["mean_test_score"]).max())
    if len(subset) == n_points:
        print(f"sklearn GridSearchCV(SVC): {t_sk:.1f}s  best {ref.best_params_}  score {ref.best_score_:.6f}")
        print(f"speed-up {t_sk / t_ours:.1f}x; max |CV score difference| over the grid {diff:.2g}; "
              f"same best params: {ref.best_params_ == ours.best_params}")
    else:
        est = t_sk * n_points / len(subset)
        print(f"sklearn GridSearchCV(SVC) on {len(subset)} of {n_points} points: {t_sk:.1f}s "
              f"-> about {est:.0f}s for the grid (extrapolated)")
        print(f"speed-up about {est / t_ours:.1f}x (extrapolated); max |CV score difference| on those points {diff:.2g}")


if __name__ == "__main__":
    main()
