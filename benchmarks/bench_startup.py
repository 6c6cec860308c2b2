"""Start-up cost: ``import embedkit`` and ``embedkit --help`` against ``import torch``, side by side.

Each command runs in a fresh interpreter, alternating, ``--repeat`` times; the medians and the ratio
``embedkit --help`` / ``import torch`` are printed (target: well under 1, since --help imports no torch).

    python benchmarks/bench_startup.py --repeat 7 --out benchmarks/results/bench_startup.txt
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {
    "import embedkit": [sys.executable, "-c", "import embedkit"],
    "embedkit --help": [sys.executable, "-m", "embedkit", "--help"],
    "import torch": [sys.executable, "-c", "import torch"],
    "python (empty)": [sys.executable, "-c", "pass"],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--out", default=None)
    ap.add_argument("--skip-torch", action="store_true",
                    help="leave out `import torch` (a toy run: no ratio, only the other timings and the probe)")
    args = ap.parse_args(argv)
    commands = {k: v for k, v in COMMANDS.items() if not (args.skip_torch and k == "import torch")}
    times = {k: [] for k in commands}
    for _ in range(args.repeat):
        for name, cmd in commands.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t0)
    probe = subprocess.run([sys.executable, "-c", "import sys, embedkit.cli.main; print('torch' in sys.modules)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    lines = [f"# bench_startup: median of {args.repeat} fresh interpreters, python {sys.version.split()[0]}"]
    med = {k: statistics.median(v) for k, v in times.items()}
    lines += [f"{k:18s} {v * 1000:8.0f} ms" for k, v in med.items()]
    lines.append(f"torch imported by the CLI at start-up: {probe}")
    if "import torch" in med:
        lines.append(f"ratio embedkit --help / import torch = {med['embedkit --help'] / med['import torch']:.2f}")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
