"""Resuming a fine-tuning run: more epochs re-plan the schedule; a crafted last.pt runs no code."""

from __future__ import annotations

import os

import pytest
import torch
from helpers import write_shapes

from embedkit.errors import WeightsError
from embedkit.finetune.train import finetune

pytestmark = pytest.mark.slow  # fine-tuning runs

FAST = dict(backbone="efficientnet_lite0", input_size=32, batch_size=8, workers=0, augment=False)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("ftr") / "shapes", per_class=5, size=32)


def _lrs(row):
    return [float(v) for v in str(row["lr"]).split("/")]


def test_resume_with_more_epochs_replans_the_cosine_schedule(data_dir, tmp_path):
    opts = dict(FAST, strategy="head", schedule="cosine", lr=1e-2)
    out = tmp_path / "run"
    first = finetune(data_dir, out, progress=False, log=lambda m: None, epochs=1, **opts)
    before = torch.load(first.last_path, weights_only=True)
    assert [g["lr"] for g in before["optimizer"]["param_groups"]] == [pytest.approx(0.0)]  # a finished cosine

    logs = []
    more = finetune(data_dir, out, resume=True, progress=False, log=logs.append, epochs=3, **opts)
    assert [r["epoch"] for r in more.history] == [1, 2, 3] and more.epochs_run == 2
    # the schedule the run would have had with --epochs 3: 1e-2 * (1 + cos(pi * e / 3)) / 2 at epochs e = 1, 2
    assert _lrs(more.history[1])[0] == pytest.approx(1e-2 * 0.75, rel=1e-2)
    assert _lrs(more.history[2])[0] == pytest.approx(1e-2 * 0.25, rel=1e-2)
    after = torch.load(more.last_path, weights_only=True)
    assert not torch.equal(after["model"]["classifier.weight"], before["model"]["classifier.weight"])
    assert more.history[1]["val_loss"] != more.history[0]["val_loss"]
    assert any("re-planned" in m for m in logs)


def test_resume_with_more_epochs_replans_the_step_schedule(data_dir, tmp_path):
    opts = dict(FAST, strategy="head", schedule="step", lr=1e-2, gamma=0.5)
    out = tmp_path / "run"
    finetune(data_dir, out, progress=False, log=lambda m: None, epochs=1, **opts)
    more = finetune(data_dir, out, resume=True, progress=False, log=lambda m: None, epochs=6, **opts)
    # step size = 6 // 3 = 2 epochs for the new length: 1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3, 2.5e-3
    assert [_lrs(r)[0] for r in more.history] == pytest.approx([1e-2, 1e-2, 5e-3, 5e-3, 2.5e-3, 2.5e-3])


def test_resume_refuses_a_crafted_training_state(data_dir, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    out = tmp_path / "run"
    out.mkdir()
    torch.save({"config": {}, "model": {}, "epoch": 1, "x": Evil()}, out / "last.pt")
    with pytest.raises(WeightsError, match="refused.*run code"):
        finetune(data_dir, out, resume=True, progress=False, log=lambda m: None, epochs=2, **FAST)
    assert not (tmp_path / "pwned").exists()
