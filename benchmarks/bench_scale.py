"""Every command on large stores: time and peak memory at 100k and 1M rows, and how they grow.

Fabricates stores of N x 512 float32 codes (a Gaussian mixture of 100 classes) through
``CodeStore.from_arrays``, then runs each command in a fresh child process and records its wall
time, peak RSS (the child's own ``VmHWM``, which counts file pages mapped from the store too) and
peak ``RssAnon`` (memory the child allocated, sampled from ``/proc/<pid>/status`` by the parent):

- ``store info`` (open + count), ``classify train`` (exact kernel grid below the kernel-row limit,
  the scalable fall-back above it), exact ``neighbors`` (k=10, 1,000 queries, streamed over the
  shards), ``neighbors --dedupe --kind ivf`` (the quantised one-pass index at both sizes, so the
  growth compares one method; the store has n // 1000 planted near-duplicate pairs to find) and
  ``view`` (PCA and UMAP fitted on a sample).

Targets (issue 9): time linear or better from 100k to 1M, peak RSS under 2 GiB plus one shard at
any N. Each command has a time limit; one that passes it is reported as such, not hidden.

    python benchmarks/bench_scale.py --sizes 100000 1000000 --out benchmarks/results/bench_scale.txt
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

DIM = 512
CLASSES = 100


def fabricate(folder: Path, n: int, seed: int = 0, chunk: int = 100_000):
    """A store of ``n`` Gaussian-mixture codes, written without holding them all in memory."""
    import embedkit

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (CLASSES, DIM)).astype(np.float32)
    raw = folder.parent / f"raw{n}.npy"
    arr = np.lib.format.open_memmap(raw, mode="w+", dtype=np.float32, shape=(n, DIM))
    labels = np.empty(n, dtype=object)
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        y = rng.integers(0, CLASSES, m)
        arr[i:i + m] = centres[y] + rng.normal(0, 1.5, (m, DIM)).astype(np.float32)
        labels[i:i + m] = [f"c{v:02d}" for v in y]
    # planted near-duplicates: row i (i % 1000 == 999) is row i-1 moved by ~0.05 in squared L2, so dedupe at
    # threshold 0.5 must find n // 1000 pairs (random rows are ~2300 apart)
    dup = np.arange(999, n, 1000)
    arr[dup] = arr[dup - 1] + rng.normal(0, 0.01, (len(dup), DIM)).astype(np.float32)
    labels[dup] = labels[dup - 1]
    arr.flush()
    paths = [f"img/{i:07d}.png" for i in range(n)]
    store = embedkit.CodeStore.from_arrays(folder, np.load(raw, mmap_mode="r"), paths, labels, overwrite=True)
    del arr
    raw.unlink()
    return store


def _sample_anon(pid: int, peak: list, stop: threading.Event, every: float = 0.05) -> None:
    """Largest ``RssAnon`` (kB) of process ``pid`` seen by polling ``/proc/<pid>/status`` (into ``peak[0]``).

    VmHWM counts file-backed pages too (a memmap's pages); RssAnon is what the process allocated. Linux
    keeps no high-water mark of RssAnon, so it is sampled: a spike shorter than ``every`` can be missed.
    """
    while not stop.is_set():
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
        except (OSError, ValueError):
            return
        stop.wait(every)


def reused(folder: Path, n: int):
    """The store of ``n`` rows an earlier run fabricated in ``folder``, or None."""
    import embedkit

    try:
        store = embedkit.CodeStore.open(folder)
    except embedkit.EmbedkitError:
        return None
    return store if len(store) == n and store.dim == DIM else None


def run_child(cmd: list[str], timeout: float) -> tuple[float, float, float, float, int, str]:
    """``(wall seconds, CPU seconds, peak RSS MiB (VmHWM), peak RssAnon MiB (sampled), return code, last output
    line)`` of a child. CPU seconds (user + system) are the comparable figure on cores shared with other work."""
    t0 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak, stop = [0], threading.Event()
    sampler = threading.Thread(target=_sample_anon, args=(proc.pid, peak, stop), daemon=True)
    sampler.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        rc = -9
    else:
        rc = proc.returncode
    dt = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # children run one at a time: the delta is this one's
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    stop.set()
    sampler.join()
    # each command runs through a small wrapper that prints its own peak RSS at exit
    rss = float("nan")
    for line in (out or "").splitlines():
        if line.startswith("@@maxrss_kb="):
            rss = int(line.split("=", 1)[1]) / 1024
    lines = [ln for ln in (out or "").splitlines() if ln.strip() and not ln.startswith("@@")]
    anon = peak[0] / 1024 if peak[0] else float("nan")
    return dt, cpu, rss, anon, rc, (lines[-1][:110] if lines else "")


def wrapped(code: str | None = None, argv: list[str] | None = None) -> list[str]:
    """A python child that runs ``code`` (or ``embedkit ARGV``) and prints its peak RSS at exit."""
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across execve, so a child would report its parent's peak
    body = (
        "import atexit\n"
        "def _hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            print(f'@@maxrss_kb={int(line.split()[1])}', flush=True)\n"
        "atexit.register(_hwm)\n"
    )
    if code is None:
        body += f"import sys\nsys.argv = {['embedkit', *argv]!r}\nfrom embedkit.cli.main import main\nmain()\n"
    else:
        body += code
    return [sys.executable, "-c", body]


def commands(store: Path, tmp: Path, n: int, classify_args=()) -> dict:
    q = (f"import numpy as np, embedkit\nfrom embedkit.retrieve.exhaustive import exhaustive_search\n"
         f"s = embedkit.CodeStore.open({str(store)!r})\n"
         f"Q = s.take(np.random.default_rng(1).choice(len(s), 1000, replace=False))\n"
         f"D, I = exhaustive_search(s, Q, k=10, metric='l2')\nprint('exact k=10 for', len(Q), 'queries:', I.shape)\n")
    # the longest command (classify train) last: on shared cores a run cut short still has the others
    return {
        "store info": wrapped(argv=["store", "info", str(store)]),
        "neighbors exact": wrapped(code=q),
        "dedupe": wrapped(argv=["neighbors", str(store), "--dedupe", "--kind", "ivf", "--metric", "l2", "--threshold",
                                "0.5", "-q", "--csv", str(tmp / f"dupes{n}.csv")]),
        "view pca": wrapped(argv=["view", str(store), "-o", str(tmp / f"pca{n}.png"), "--method", "pca", "--quiet",
                                  "--thumbnails", "0"]),
        "classify train": wrapped(argv=["classify", "train", str(store), "-o", str(tmp / f"model{n}"), "--quiet",
                                        "--no-baseline", "--overwrite", *classify_args]),
        # UMAP fitted on the default sample; the other points are left out (transforming 1M points through
        # umap-learn runs at ~600 points/s on 2 cores: bench_view.py measures that policy on its own)
        "view umap": wrapped(argv=["view", str(store), "-o", str(tmp / f"umap{n}.png"), "--method", "umap",
                                   "--rest", "drop", "--quiet", "--thumbnails", "0"]),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per command")
    ap.add_argument("--only", nargs="*", default=None, help="run only these commands")
    ap.add_argument("--workdir", default=None, help="where the stores go (default: a temporary folder)")
    ap.add_argument("--classify-args", default="",
                    help="extra options of classify train, quoted, e.g. \"--max-kernel-rows 2000 --components 512\"")
    ap.add_argument("--skip", nargs="*", default=[], help="N:command pairs to leave out, e.g. 1000000:dedupe")
    ap.add_argument("--reuse-stores", action="store_true",
                    help="with --workdir: open a store of N rows left there by an earlier run instead of fabricating it")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="bench_scale_"))
    tmp.mkdir(parents=True, exist_ok=True)
    lines = [f"# bench_scale: N x {DIM} float32, {CLASSES}-class Gaussian mixture, {os.cpu_count()} cores, "
             f"timeout {args.timeout:.0f}s per command; classify train {args.classify_args or '(defaults)'}"
             + (f"; left out: {' '.join(args.skip)}" if args.skip else ""),
             f"{'N':>9s}  {'command':16s} {'seconds':>9s} {'cpu s':>8s} {'peak MiB':>9s} {'anon MiB':>9s}  result"]
    print("\n".join(lines), flush=True)

    def save(lines):
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text("\n".join(lines) + "\n")

    results = {}
    try:
        for n in args.sizes:
            t0 = time.perf_counter()
            store = reused(tmp / f"s{n}", n) if args.reuse_stores else None
            was_reused, store = store is not None, store or fabricate(tmp / f"s{n}", n)
            shard_mib = store.shards[0]["rows"] * DIM * 4 / 2**20
            line = (f"{n:9d}  {'(fabricate)':16s} {time.perf_counter() - t0:9.1f} {'':>8s} {'':>9s} {'':>9s}  "
                    + ("reused: " if was_reused else "") + f"{len(store.shards)} shards of {store.shards[0]['rows']} rows ({shard_mib:.0f} MiB each)")
            print(line, flush=True)
            lines.append(line)
            for name, cmd in commands(tmp / f"s{n}", tmp, n, args.classify_args.split()).items():
                if (args.only and name not in args.only) or f"{n}:{name}" in args.skip:
                    continue
                dt, cpu, rss, anon, rc, last = run_child(cmd, args.timeout)
                results[(n, name)] = (dt, cpu, rss, anon, rc)
                status = "TIMED OUT" if rc == -9 else ("ok" if rc == 0 else f"exit {rc}")
                line = f"{n:9d}  {name:16s} {dt:9.1f} {cpu:8.1f} {rss:9.0f} {anon:9.0f}  {status}: {last}"
                print(line, flush=True)
                lines.append(line)
                save(lines)  # a run stopped part-way keeps the figures it got
        if len(args.sizes) >= 2:
            a, b = args.sizes[0], args.sizes[-1]
            lines.append(f"growth from {a} to {b} rows (x{b / a:.0f}): wall-time, CPU-time and peak-memory ratios "
                         "(VmHWM, RssAnon)")
            for (n, name), (dt, cpu, rss, anon, rc) in results.items():
                if n == a and (b, name) in results:
                    dt2, cpu2, rss2, anon2, rc2 = results[(b, name)]
                    lines.append(f"  {name:16s} time x{dt2 / dt:6.1f}   cpu x{cpu2 / max(cpu, 1e-9):6.1f}   "
                                 f"memory x{rss2 / rss:5.2f}   anon x{anon2 / anon:5.2f}   "
                                 f"({'both ok' if rc == rc2 == 0 else 'not both ok'})")
            print("\n".join(lines[-len(results) // 2 - 1:]), flush=True)
    finally:
        if not args.workdir:
            shutil.rmtree(tmp, ignore_errors=True)
    save(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
