"""benchmarks/bench_serve.py at toy size: a real `embedkit serve` process answers concurrent clients without errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_bench_serve_toy_run(tmp_path, capsys):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    spec = importlib.util.spec_from_file_location("bench_serve", REPO / "benchmarks" / "bench_serve.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_serve"] = bench
    spec.loader.exec_module(bench)
    out = tmp_path / "serve.txt"
    rc = bench.main(["--rows", "3000", "--dim", "32", "--clients", "4", "--queries", "15", "--workdir", str(tmp_path),
                     "--startup-timeout", "300", "--out", str(out)])
    text = out.read_text()
    assert rc == 0 and "60 requests in" in text and "errors: 0" in text, text
    assert "flat cosine index on torch (3000 x 32)" in text and "peak (VmHWM)" in text
