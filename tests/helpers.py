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


class ReadLog:
    """How a store was read: ``reads`` holds the rows of every ``take`` / ``iter_chunks`` block served."""

    @property
    def largest_block(self) -> int:
        return max(self.reads, default=0)

    @property
    def rows_read(self) -> int:
        return sum(self.reads)


class FakeStore(ReadLog):
    """The CodeStore surface the library may use, and nothing more: no ``codes`` attribute, so every code
    must come through ``take`` / ``iter_chunks``, whose blocks are recorded (``reads``, ``largest_block``,
    ``rows_read``, ``unsorted_takes``; ``path_reads`` counts lookups of ``paths``).

    ``codes`` is an N x D array, or ``(rows_of, n, dim)``: a function giving the codes of an index array,
    for stores too large to hold (see :func:`synthetic_store`).
    """

    def __init__(self, path, codes, paths=None, labels=None, identity=None, sha1=None, meta=None):
        if isinstance(codes, tuple):
            self._rows_of, n, dim = codes
        else:
            X = np.asarray(codes, dtype=np.float32)
            self._rows_of, (n, dim) = (lambda idx: X[idx].copy()), X.shape
        from pathlib import Path

        self.path, self.n, self.dim = Path(path), int(n), int(dim)
        self._paths = np.array(paths if paths is not None else [f"img/{i:05d}.png" for i in range(n)], dtype=object)
        self.labels = np.array(labels if labels is not None else [""] * n, dtype=object)
        self.identity = identity
        self.meta = meta if meta is not None else {"count": n, "dim": dim}
        self._sha1 = sha1
        self.reads, self.unsorted_takes, self.path_reads = [], 0, 0

    def __len__(self):
        return self.n

    @property
    def paths(self):
        self.path_reads += 1
        return self._paths

    def take(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        self.unsorted_takes += int(np.any(np.diff(idx) < 0))
        self.reads.append(len(idx))
        return self._rows_of(idx)

    def iter_chunks(self, rows=65536, start=0, stop=None):
        stop = self.n if stop is None else min(stop, self.n)
        for i in range(start, stop, rows):
            idx = np.arange(i, min(i + rows, stop))
            self.reads.append(len(idx))
            yield i, self._rows_of(idx)

    def column(self, name):
        from embedkit.errors import ConfigError

        if name == "sha1" and self._sha1 is not None:
            return np.array(self._sha1, dtype=object)
        if name == "path":
            return self._paths
        raise ConfigError(f"column {name!r} is not valid")

    def recorded_sha1(self, rows=None):
        sha1 = np.array(self._sha1 if self._sha1 is not None else [""] * self.n, dtype=object)
        return sha1 if rows is None else sha1[np.asarray(rows, dtype=np.int64)]

    def check_compatible(self, identity, what="these codes"):
        from embedkit.errors import MismatchError
        from embedkit.models.identity import identity_mismatch

        diffs = identity_mismatch(self.identity, identity)
        if diffs:
            raise MismatchError(f"{what} come from another backbone/layer ({'; '.join(diffs)})")


def synthetic_store(n: int, d: int, k: int = 4, seed: int = 0, path="synthetic") -> FakeStore:
    """A :class:`FakeStore` of ``n`` x ``d`` codes in ``k`` classes (``store.cls``), computed from the row
    number on demand, so never all in memory."""
    rng = np.random.default_rng(seed)
    centres = (rng.normal(size=(k, d)) * 3).astype(np.float32)
    freq = rng.uniform(0.1, 3.0, size=d).astype(np.float32)
    cls = np.arange(n) % k

    def rows_of(idx):
        noise = np.sin(np.outer(idx + 1, freq).astype(np.float32) + freq)
        return centres[cls[idx]] + noise

    store = FakeStore(path, (rows_of, n, d), paths=[f"img/{i:07d}.png" for i in range(n)],
                      labels=np.array([f"c{i}" for i in range(k)], dtype=object)[cls],
                      meta={"created": "2024-01-01T00:00:00"})
    store.cls = cls
    return store


class CountingStore(ReadLog):
    """A real store whose ``take`` / ``iter_chunks`` blocks are recorded (a budget must be checked before reading)."""

    def __init__(self, store):
        self._s = store
        self.reads, self.unsorted_takes = [], 0

    def __getattr__(self, name):
        return getattr(self._s, name)

    def __len__(self):
        return len(self._s)

    def take(self, idx):
        self.reads.append(len(idx))
        return self._s.take(idx)

    def iter_chunks(self, rows=65536, start=0, stop=None):
        for first, block in self._s.iter_chunks(rows, start, stop):
            self.reads.append(len(block))
            yield first, block


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
