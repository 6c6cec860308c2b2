"""Load test of `embedkit serve`: N concurrent clients x M exact searches against 127.0.0.1.

    python benchmarks/bench_serve.py [--rows 100000] [--dim 512] [--clients 8] [--queries 250] [-k 10]
                                     [--out benchmarks/results/bench_serve.txt]

A store of --rows x --dim float32 codes is fabricated (a Gaussian mixture standing in for CNN codes, imported
with CodeStore.from_arrays), `embedkit serve` is started on it as its own process (exact cosine search, the
index held in memory), and --clients threads each send --queries requests GET /api/search/row/R?k=K for random
rows R over one keep-alive connection each. Prints the server's start-up time, its memory after start-up and
its peak (VmHWM, from /proc), the throughput, latency percentiles (p50/p95/p99/max, measured by the clients,
so they include HTTP and JSON) and the number of errors (any status but 200, or a result list of the wrong
length). Target (issue 23): 0 errors and p99 under 100 ms for exact search on 100k x 512 codes.
Measured figures are kept in benchmarks/results/bench_serve.txt.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def fabricate(folder: Path, rows: int, dim: int, seed: int = 0):
    from embedkit.store.codestore import CodeStore

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((256, dim), dtype=np.float32)
    which = rng.integers(0, len(centres), rows)
    codes = np.empty((rows, dim), np.float32)
    for i in range(0, rows, 16384):  # in blocks: no second full-size temporary
        j = min(i + 16384, rows)
        codes[i:j] = centres[which[i:j]] + rng.standard_normal((j - i, dim), dtype=np.float32)
    return CodeStore.from_arrays(folder, codes, [f"img/{i:07d}.png" for i in range(rows)], overwrite=True,
                                 labels=[f"c{w}" for w in which])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(port: int, proc, timeout: float) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}:\n{proc.stderr.read()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/api/info")
            if conn.getresponse().status == 200:
                return time.perf_counter() - t0
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server did not answer within {timeout:.0f} s")


def client(port: int, rows: int, queries: int, k: int, seed: int, lat: list, errors: list) -> None:
    rng = np.random.default_rng(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(queries):
        row = int(rng.integers(rows))
        t = time.perf_counter()
        try:
            conn.request("GET", f"/api/search/row/{row}?k={k}")
            resp = conn.getresponse()
            body = resp.read()
            ok = resp.status == 200 and len(json.loads(body)["results"]) == k
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            ok, body = False, repr(exc).encode()
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        lat.append(time.perf_counter() - t)
        if not ok:
            errors.append(body[:200])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--queries", type=int, default=250, help="requests per client")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS of the server (the search library's threads; default: all cores)")
    ap.add_argument("--workdir", default=None, help="where the store is fabricated (default: a temporary folder)")
    ap.add_argument("--startup-timeout", type=float, default=600)
    ap.add_argument("--out", default=None, help="also write the report here")
    ap.add_argument("--append", action="store_true", help="add the report to --out instead of replacing it")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        t = time.perf_counter()
        store = fabricate(work / "store", args.rows, args.dim)
        fab = time.perf_counter() - t
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "embedkit", "serve", str(store.path), "--port", str(port),
                                 "--max-points", "5000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, EMBEDKIT_FORCE_CPU="1",
                                         **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})))
        try:
            startup = wait_ready(port, proc, args.startup_timeout)
            info = json.loads(_get(port, "/api/info"))
            for r in range(20):  # warm-up: first requests pay for lazy imports and the first FAISS call
                _get(port, f"/api/search/row/{r}?k={args.k}")
            rss_ready = kib(proc.pid, "VmRSS")
            lat, errors = [], []
            threads = [threading.Thread(target=client, args=(port, args.rows, args.queries, args.k, s, lat, errors))
                       for s in range(args.clients)]
            t, cpu0, own0 = time.perf_counter(), cpu_seconds(proc.pid), time.process_time()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t
            cpu, own = cpu_seconds(proc.pid) - cpu0, time.process_time() - own0
            done = json.loads(_get(port, "/api/info"))["searches"]
            batch = (done["queries"] - info["searches"]["queries"] - 20) / max(
                done["batches"] - info["searches"]["batches"] - 20, 1)
            peak = kib(proc.pid, "VmHWM")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    ms = np.asarray(lat) * 1000
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    n = len(ms)
    met = not errors and p99 < 100
    codes_mib = args.rows * args.dim * 4 / 2**20
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"embedkit serve load test  ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load:.1f} at the end; clients and server share them)",
        f"store: {args.rows} x {args.dim} float32 codes ({codes_mib:.0f} MiB), fabricated in {fab:.1f} s; "
        f"index: {info['index']}",
        f"server: search threads (OMP_NUM_THREADS) {args.threads or 'default (all cores)'}; ready in "
        f"{startup:.1f} s after start; memory after start-up {rss_ready / 1024:.0f} MiB, "
        f"peak (VmHWM) {peak / 1024:.0f} MiB",
        f"load: {args.clients} concurrent clients x {args.queries} requests GET /api/search/row/R?k={args.k} "
        f"(exact search, random rows)",
        f"  {n} requests in {wall:.1f} s: {n / wall:.0f} requests/s",
        f"  CPU: server {cpu:.1f} s ({cpu / n * 1000:.1f} ms a request: {n / max(cpu, 1e-9):.0f} requests per "
        f"CPU-second), clients {own:.1f} s; wall x cores available {wall * (os.cpu_count() or 1):.0f} s",
        f"  searches: {batch:.1f} queries a batch on average (concurrent queries are searched together)",
        f"  latency ms: p50 {p50:.1f}  p95 {p95:.1f}  p99 {p99:.1f}  max {ms.max():.1f}",
        f"  errors: {len(errors)}" + (f" (first: {errors[0]!r})" if errors else ""),
        f"target (0 errors, p99 < 100 ms): {'met' if met else 'NOT met'}",
    ]
    text = "\n".join(lines)
    print(text, flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a" if args.append else "w", encoding="utf-8") as f:
            f.write(("\n" if args.append else "") + text + "\n")
    return 0 if not errors else 1


def _get(port: int, url: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", url)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise SystemExit(f"GET {url}: {resp.status} {body[:200]!r}")
    return body


if __name__ == "__main__":
    sys.exit(main())
