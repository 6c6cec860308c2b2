"""Training data for fine-tuning: readable labelled images, the shared splits, augmentation and loaders.

Images are read exactly as :func:`embedkit.embed` reads them (:mod:`embedkit.read`);
the unreadable ones are found by one decoding pass before training, listed, and
left out, and the remaining rows are split with :func:`embedkit.splits.make_split`
on the same labels and seed as ``embedkit classify`` uses on a store of the same
folder, so fine-tuning never sees the images classify will test on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from embedkit.defaults import SPLIT_FRACTIONS
from embedkit.errors import DataError, invalid
from embedkit.finetune.config import AUGMENT_STYLES
from embedkit.io.discover import Item, discover
from embedkit.io.loader import ImageDataset, collate_skipping
from embedkit.models.preprocessing import Preprocessing
from embedkit.splits import DESIGN, Split, make_split

log = logging.getLogger(__name__)

def resized(pre: Preprocessing, input_size: int | None) -> Preprocessing:
    """``pre`` at another input size, keeping its resize/crop ratio (e.g. 64 px for quick runs)."""
    if not input_size or int(input_size) == pre.input_size:
        return pre
    s = int(input_size)
    return Preprocessing(input_size=s, resize=int(round(s * pre.resize / pre.input_size)), mean=pre.mean,
                         std=pre.std, interpolation=pre.interpolation)


class LineWeight:
    """Thicken or thin the strokes of a drawing: a 3x3 min filter (dark lines grow on a light ground) or max filter.

    Illustrations of one class differ in line weight from one design to another (outline, flat, high
    contrast), which no photo augmentation imitates.
    """

    def __init__(self, p: float = 0.3):
        self.p = p

    def __call__(self, img):
        import random

        from PIL import ImageFilter

        if random.random() >= self.p:
            return img
        return img.filter(ImageFilter.MinFilter(3) if random.random() < 0.5 else ImageFilter.MaxFilter(3))

    def __repr__(self) -> str:
        return f"LineWeight(p={self.p})"


def train_transform(pre: Preprocessing, augment: bool = True, strength: float = 1.0, style: str = "photo"):
    """Random resized crop, horizontal flip and colour jitter scaled by ``strength`` (0..1); eval transform if off.

    ``style="illustration"`` adds what varies between designs of a drawing: grey-scale renderings (as the
    monochrome emoji sets), line weight (:class:`LineWeight`), flat fills (posterised colours) and a wider hue
    jitter; each at a probability scaled by ``strength``. ``style="glyph"`` is for icons and line art, where
    one icon set differs from the next by stroke, pose and fill rather than by colour: line weight, a small
    rotation / shift / shear on the white ground, grey-scale, inverted renderings (light glyphs on dark) and
    random erasing of a part of the drawing.
    """
    from torchvision import transforms as T

    if not augment or strength <= 0:
        return pre.transform()
    if strength > 1:
        raise invalid("augmentation strength", strength, "a number in [0, 1]")
    if style not in AUGMENT_STYLES:
        raise invalid("augmentation style", style, list(AUGMENT_STYLES))
    interp = T.InterpolationMode(pre.interpolation)
    jitter = 0.4 * strength
    steps = [
        # strength 1 is the usual ImageNet recipe (crops down to 8% of the area); 0.5 keeps >= 54%.
        T.RandomResizedCrop(pre.input_size, scale=(1.0 - 0.92 * strength, 1.0), interpolation=interp),
        T.RandomHorizontalFlip(),
    ]
    if style == "illustration":
        p = min(1.0, 0.6 * strength)
        steps += [LineWeight(p), T.RandomPosterize(bits=3, p=p / 2),
                  T.ColorJitter(jitter, jitter, jitter, 0.5 * strength), T.RandomGrayscale(p)]
    elif style == "glyph":
        p = min(1.0, 0.6 * strength)
        white = (255, 255, 255)
        steps += [LineWeight(p), T.RandomAffine(15 * strength, translate=(0.1 * strength, 0.1 * strength),
                                                shear=10 * strength, fill=white, interpolation=interp),
                  T.ColorJitter(jitter, jitter, jitter, 0.5 * strength), T.RandomGrayscale(p),
                  T.RandomInvert(0.2 * strength)]
        return T.Compose(steps + [T.ToTensor(), T.Normalize(pre.mean, pre.std),
                                  T.RandomErasing(0.5 * strength, scale=(0.02, 0.15), value=0)])
    else:
        steps.append(T.ColorJitter(jitter, jitter, jitter, 0.1 * strength))
    return T.Compose(steps + [T.ToTensor(), T.Normalize(pre.mean, pre.std)])


@dataclass
class TrainingData:
    """Readable labelled images (``items``), integer ``targets``, ``class_names``, the ``split`` and ``skipped``."""

    items: list
    targets: np.ndarray
    class_names: list
    split: Split
    skipped: list  # (path, reason)

    def part(self, name: str) -> np.ndarray:
        return getattr(self.split, name)

    def write(self, out) -> None:
        """``split.json`` (class names and the rows of each part) and ``skipped.csv``, atomically."""
        from embedkit.atomic import write_csv_atomic, write_json_atomic

        out = Path(out)
        write_json_atomic(out / "split.json", {
            "classes": self.class_names,
            **{part: [{"index": int(i), "path": self.items[i].path, "label": self.items[i].label}
                      for i in self.part(part)] for part in ("train", "val", "test")}})
        write_csv_atomic(out / "skipped.csv", ["path", "reason"], self.skipped, spreadsheet=True)


def _probe(_img):
    return torch.zeros(0)


def readable(items: list[Item], workers: int = 0, progress: bool = True) -> tuple[list[Item], list]:
    """Decode every image once; returns ``(readable items in order, [(path, reason)] for the others)``."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    loader = DataLoader(ImageDataset(items, _probe, want_sha1=False), batch_size=64, num_workers=workers,
                        collate_fn=collate_skipping)
    ok, bad = [], []
    for idx, _x, _info, skipped in tqdm(loader, desc="checking images", unit="batch", disable=not progress):
        ok.extend(idx)
        bad.extend(skipped)
    keep = set(ok)
    return [it for i, it in enumerate(items) if i in keep], [(items[i].path, reason) for i, reason in sorted(bad)]


def _split(items, labels, fractions, seed, split_file, split_by, test_groups=(), val_groups=()) -> Split:
    """The split ``embedkit classify`` makes of a store of these items, with the same options
    (:func:`embedkit.splits.make_split`; fine-tuning groups by ``design`` only: its items have no other columns)."""
    if split_by not in (None, DESIGN):
        raise invalid("split_by", split_by, f"'{DESIGN}' (hold out whole file-name groups, as classify --split-by "
                      f"{DESIGN}) or no split_by", "fine-tuning items carry no other columns")
    return make_split([it.path for it in items], labels, split_by, fractions, seed, test_groups, val_groups,
                      split_file)


def prepare_data(source, fractions=SPLIT_FRACTIONS, seed: int = 0, split_file=None, workers: int = 0,
                 progress: bool = True, split_by: str | None = None, test_groups=(), val_groups=()) -> TrainingData:
    """Find, check and split the labelled images of ``source`` (folder of class sub-folders or labelled CSV)."""
    items = discover(source)
    unlabelled = [it.path for it in items if not it.label]
    if unlabelled:  # the label rule of embedkit.splits: files directly in the top folder are left out
        log.warning("%d of %d images have no class label (e.g. %s: not in a class sub-folder); they are left out "
                    "of fine-tuning", len(unlabelled), len(items), unlabelled[0])
        items = [it for it in items if it.label]
        if not items:
            raise DataError(f"none of the {len(unlabelled)} images of {str(source)!r} has a class label; fine-tuning "
                            "needs one sub-folder per class, or a CSV manifest with path,label columns")
    items, skipped = readable(items, workers, progress)
    if not items:
        raise DataError(f"none of the images of {str(source)!r} could be read ({len(skipped)} skipped)")
    labels = np.asarray([it.label for it in items])
    class_names = sorted(set(labels.tolist()))
    if len(class_names) < 2:
        raise DataError(f"fine-tuning a classifier needs at least 2 classes; {str(source)!r} has only "
                        f"{class_names!r} ({len(items)} images); add one sub-folder per class")
    targets = np.searchsorted(class_names, labels).astype(np.int64)
    split = _split(items, labels, fractions, seed, split_file, split_by, test_groups, val_groups)
    for part in ("train", "val"):
        if len(getattr(split, part)) == 0:
            raise DataError(f"the {part} split is empty ({split.sizes()} images with fractions {tuple(fractions)}); "
                            "give it a share, e.g. --fractions 0.64,0.16,0.20, or add images")
    missing = sorted(set(class_names) - set(labels[split.train].tolist()))
    if missing:
        raise DataError(f"classes {missing} have no training image; add images or change the split")
    return TrainingData(items, targets, class_names, split, skipped)


def make_loader(data: TrainingData, part: str, transform, batch_size: int, workers: int = 0, train: bool = False,
                balanced: bool = False, seed: int = 0, pin_memory: bool = False):
    """DataLoader over one split, yielding ``(indices, images, infos, skipped)``.

    For training, the order (shuffled, or class-balanced sampling with replacement)
    comes from a generator seeded with ``seed``, so a resumed epoch sees the same batches.
    """
    from torch.utils.data import (
        DataLoader,
        RandomSampler,
        Subset,
        WeightedRandomSampler,
    )

    rows = data.part(part)
    sub = Subset(ImageDataset(data.items, transform, want_sha1=False), rows.tolist())
    sampler = None
    if train:
        g = torch.Generator().manual_seed(int(seed))
        if balanced:
            counts = np.bincount(data.targets[rows], minlength=len(data.class_names))
            w = 1.0 / counts[data.targets[rows]]
            sampler = WeightedRandomSampler(torch.as_tensor(w, dtype=torch.double), len(rows), replacement=True, generator=g)
        else:
            sampler = RandomSampler(sub, generator=g)
    return DataLoader(sub, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_skipping,
                      pin_memory=pin_memory, drop_last=False, persistent_workers=False,
                      generator=torch.Generator().manual_seed(int(seed) + 1) if workers else None)
