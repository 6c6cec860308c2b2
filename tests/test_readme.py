"""The README's Python examples that stand on their own run as written (on a small store at codes/)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_the_retrieval_example_runs_as_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("faiss")
    from embedkit import CodeStore

    block = next(b for b in BLOCKS if "cached_index" in b)
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    CodeStore.from_arrays("codes/", rng.normal(size=(40, 16)).astype(np.float32),
                          [f"img/{i}.png" for i in range(40)], labels=["a", "b"] * 20)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the documentation's own code
    assert scope["how"] == "built" and scope["ids"].shape == (5, 3) and scope["rows"].shape == (5, 3)
    assert (scope["ids"][:, 0] == np.arange(5)).all()  # each stored code is its own nearest neighbour
    assert "img/0.png" in capsys.readouterr().out
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102
    assert scope["how"] == "loaded"
