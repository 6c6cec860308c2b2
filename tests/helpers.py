"""Helpers shared by the tests (import them with ``from helpers import ...``; fixtures live in conftest.py)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def make_shape_image(kind: int, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A synthetic image of class ``kind``: a coloured shape on white with jitter."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    colours = [(220, 30, 30), (30, 160, 30), (30, 60, 220), (230, 180, 20), (150, 40, 180)]
    c = colours[kind % len(colours)]
    o = int(rng.integers(2, 10))
    box = (o, o, size - o - int(rng.integers(0, 8)), size - o - int(rng.integers(0, 8)))
    [d.ellipse, d.rectangle, lambda b, fill: d.polygon([(b[0], b[3]), ((b[0] + b[2]) // 2, b[1]), (b[2], b[3])], fill=fill),
     lambda b, fill: d.line([b[:2], b[2:]], fill=fill, width=6), d.rectangle][kind % 5](box, fill=c)
    return img


def write_shapes(root, per_class: int = 8, size: int = 64, seed: int = 0,
                 classes=("circle", "square", "triangle")):
    """An ImageFolder of synthetic shapes at ``root``: one sub-folder per class, ``{class}_{i}.png`` files."""
    from pathlib import Path

    root, rng = Path(root), np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            make_shape_image(k, rng, size=size).save(root / name / f"{name}_{i}.png")
    return root


class captured_logs:
    """Collect embedkit's log messages (``with captured_logs() as logs: ...; "text" in logs.text``).

    A handler on the ``embedkit`` logger itself, so it works whether or not the CLI has configured logging
    (which stops propagation to the root logger that pytest's caplog listens to).
    """

    def __enter__(self):
        import logging

        self.records, self.logger = [], logging.getLogger("embedkit")
        self.handler = logging.Handler()
        self.handler.emit = self.records.append
        self.level = self.logger.level
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.DEBUG)
        return self

    @property
    def text(self) -> str:
        return "\n".join(r.getMessage() for r in self.records)

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)


def served_shapes(root):
    """For the `embedkit serve` tests: shapes (3 classes x 6) plus one exact copy of circle_0, embedded with the
    default backbone, and an SVM trained on them. Returns ``(images folder, store, model folder)``."""
    import shutil
    from pathlib import Path

    import embedkit
    from embedkit.classify.train import train

    root = Path(root)
    images = write_shapes(root / "images", per_class=6)
    shutil.copy(images / "circle" / "circle_0.png", images / "circle" / "circle_copy.png")
    store = embedkit.embed(images, root / "codes", progress=False).store
    train(store, root / "model", Cs=[1], gammas=["scale"], n_jobs=1, progress=False, baseline=False)
    return images, store, root / "model"
