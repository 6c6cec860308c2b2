"""Where a fine-tuning user waits: validation and test passes have progress bars; curves.png reads at a glance."""

from __future__ import annotations

import pytest
from helpers import write_shapes

import embedkit.render.plots as plots
from embedkit.finetune.train import finetune

pytestmark = pytest.mark.slow  # fine-tuning runs


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("ftp") / "shapes", per_class=5, size=32)


def _record_bars(monkeypatch):
    import tqdm.auto

    bars = []
    real = tqdm.auto.tqdm

    class Recording(real):  # a subclass: other libraries subclass tqdm.auto.tqdm at import
        def __init__(self, *args, **kwargs):
            bars.append((kwargs.get("desc"), kwargs.get("total"), bool(kwargs.get("disable"))))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    return bars


@pytest.mark.parametrize("progress", [True, False])
def test_validation_and_test_passes_have_progress_bars(data_dir, tmp_path, monkeypatch, progress):
    bars = _record_bars(monkeypatch)
    finetune(data_dir, tmp_path / "run", progress=progress, log=lambda m: None, backbone="efficientnet_lite0",
             strategy="head", epochs=1, input_size=32, batch_size=8, workers=0, augment=False, eval_test=True)
    descs = {d: (total, disabled) for d, total, disabled in bars}
    assert descs["validation 1/1"][0] == 3 and descs["test (best epoch 1)"][0] == 3  # 20 % of 15 images each
    assert all(disabled is (not progress) for _, disabled in descs.values())  # --quiet disables every bar


def test_curves_have_integer_epochs_and_mark_the_best(tmp_path, monkeypatch):
    figs = []
    real = plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, **k: (figs.append(fig), real(fig, path, **k))[1])
    hist = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e + (0.3 if e == 3 else 0), "train_acc": 0.5,
             "val_acc": a} for e, a in ((1, 0.4), (2, 0.7), (3, 0.6))]
    path = plots.learning_curves_png(hist, tmp_path / "curves.png", best_epoch=2)
    assert path.is_file()
    for ax in figs[0].axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
        labels = [line.get_label() for line in ax.get_lines()]
        assert "best (epoch 2)" in labels
        star = ax.get_lines()[labels.index("best (epoch 2)")]
        assert list(star.get_xdata()) == [2]
    plots.learning_curves_png(hist, tmp_path / "plain.png")  # without a best epoch: still drawn
