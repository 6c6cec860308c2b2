"""Top-9 activating patches per channel: ``embedkit inspect patches``.

The images are streamed through the network(s) once, in batches (same reading as ``embed``:
bad files are skipped and listed). For every channel of the layer a bounded top-k keeps the
``k`` strongest images (each at its strongest position) and the per-channel sum gives the mean
activation; memory is ``channels x k`` whatever the number of images. Channels are chosen at
the end (default: the highest mean activation), so one pass suffices. Each kept position is
mapped back to its input patch through the layer's receptive field (:mod:`.receptive`), and only
those few images are decoded again to cut the patches.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from embedkit.errors import DataError, EmbedkitError, invalid
from embedkit.inspect.activations import LoadedNet, Probe
from embedkit.inspect.receptive import ReceptiveField, receptive_field

TOP_K = 9


class TopK:
    """The ``k`` highest activations per channel seen so far (value, image, position) and the running means.

    One image appears at most once per channel, at its strongest position: nine neighbouring
    positions of the same image would say less than nine images.
    """

    def __init__(self, channels: int, k: int = TOP_K):
        self.k = k
        self.values = torch.full((channels, k), -float("inf"))
        self.images = torch.full((channels, k), -1, dtype=torch.long)
        self.positions = torch.zeros((channels, k), dtype=torch.long)  # flat index y * w + x
        self.sums = torch.zeros(channels, dtype=torch.float64)
        self.count = 0
        self.width = 0

    def update(self, act: torch.Tensor, image_ids) -> None:
        """Merge a batch of activations ``(B, C, h, w)`` of the images ``image_ids``."""
        act = act.detach().float().cpu()
        b, c, _h, w = act.shape
        self.width = w
        self.sums += act.mean(dim=(2, 3)).sum(0, dtype=torch.float64)
        self.count += b
        best, pos = act.flatten(2).max(dim=2)  # (B, C)
        ids = torch.as_tensor(list(image_ids), dtype=torch.long).view(1, b).expand(c, b)
        vals = torch.cat([self.values, best.T.nan_to_num(nan=-float("inf"))], 1)
        keep = vals.topk(self.k, dim=1).indices
        self.values = vals.gather(1, keep)
        self.images = torch.cat([self.images, ids], 1).gather(1, keep)
        self.positions = torch.cat([self.positions, pos.T], 1).gather(1, keep)

    @property
    def means(self) -> np.ndarray:
        return (self.sums / max(self.count, 1)).numpy()

    def hits(self, channel: int) -> list[tuple[float, int, int, int]]:
        """``(value, image, y, x)`` of a channel's kept activations, strongest first."""
        out = []
        for v, i, p in zip(self.values[channel].tolist(), self.images[channel].tolist(),
                           self.positions[channel].tolist()):
            if i >= 0:
                out.append((float(v), int(i), p // self.width, p % self.width))
        return out


def parse_channels(spec, n_channels: int) -> tuple[int | None, list[int] | None]:
    """``"16"`` -> top 16 by mean activation; ``"all"``; ``"3,7,12"`` (or ``"5,"``) -> those channels."""
    text = str(spec).strip().lower()
    if text == "all":
        return None, list(range(n_channels))
    if text.isdigit() and int(text) > 0:
        return min(int(text), n_channels), None
    try:
        idx = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        idx = []
    if not idx or any(not 0 <= i < n_channels for i in idx):
        raise invalid("channels", spec, f"a count (16), 'all' or channel indices in 0..{n_channels - 1} "
                                        "separated by commas (one channel: '5,')")
    return None, idx


def choose_channels(top: TopK, spec) -> list[int]:
    """The channels to show: explicit ones, or those with the highest mean activation."""
    count, idx = parse_channels(spec, top.values.shape[0])
    if idx is not None:
        return idx
    return [int(c) for c in np.argsort(-top.means, kind="stable")[:count]]


def crop_patch(image: np.ndarray, box: tuple[int, int, int, int], fill: int = 128) -> np.ndarray:
    """The ``box`` (left, top, right, bottom) of an HxWx3 uint8 image; parts outside are ``fill`` grey
    (as the network's zero padding is, more or less, the mean colour)."""
    left, top, right, bottom = box
    out = np.full((bottom - top, right - left, 3), fill, np.uint8)
    h, w = image.shape[:2]
    y0, y1, x0, x1 = max(top, 0), min(bottom, h), max(left, 0), min(right, w)
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = image[y0:y1, x0:x1]
    return out


@dataclass
class Hit:
    """One kept activation: the image, where, how strong, and the input patch it sees."""

    path: str
    value: float
    y: int
    x: int
    box: tuple
    patch: np.ndarray | None = None


@dataclass
class NetPatches:
    """One network's result: the channels shown and their hits."""

    label: str
    layer: str
    field: ReceptiveField
    channels: list
    means: list
    hits: list  # per channel, list[Hit]


@dataclass
class PatchesRun:
    """Everything one pass produced (per network) plus the reading counts."""

    nets: list
    images: int
    skipped: list = field(default_factory=list)  # (path, reason)
    seconds: float = 0.0
    outputs: tuple = ()  # (png, html)

    def summary(self) -> str:
        first = self.nets[0]
        outs = " and ".join(str(p) for p in self.outputs)
        return (f"inspected {self.images} images ({len(self.skipped)} skipped) at layer {first.layer} "
                f"({first.field.describe()}), {len(first.channels)} channels x {TOP_K} patches for "
                f"{' and '.join(n.label for n in self.nets)} in {self.seconds:.1f}s -> {outs}")


def stream_top(nets: list[LoadedNet], items, layer: str, *, device="auto", batch_size=None, workers=None,
               k: int = TOP_K, progress: bool = True):
    """Run the images once through every network's ``layer``; returns ``(probes, fields, tops, seen, skipped)``."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from embedkit.device import resolve_device
    from embedkit.io.loader import ImageDataset, collate_skipping, default_batch_size, default_workers

    dev = resolve_device(device)
    pre = nets[0].preprocessing  # every network sees the same input images
    probes = [Probe(n.model, layer, n.spec) for n in nets]
    fields = [receptive_field(p, pre.input_size) for p in probes]
    probes = [p.to(dev) for p in probes]
    tops: list[TopK | None] = [None] * len(nets)
    nw = default_workers() if workers is None else int(workers)
    bs = int(batch_size or default_batch_size(dev))
    loader = DataLoader(ImageDataset(items, pre.transform_uint8(), want_sha1=False), batch_size=bs,
                        num_workers=nw, collate_fn=collate_skipping, shuffle=False)
    seen, skipped = 0, []
    with tqdm(total=len(items), unit="img", disable=not progress, desc=f"inspect {layer}") as bar, torch.inference_mode():
        for idx, x, _infos, bad in loader:
            skipped.extend((items[i].path, reason) for i, reason in bad)
            if x is not None:
                x = pre.normalize_batch(x.to(dev))
                for j, probe in enumerate(probes):
                    act = probe(x)
                    if tops[j] is None:
                        tops[j] = TopK(act.shape[1], k)
                    tops[j].update(act, idx)
                seen += len(idx)
            bar.update(len(idx) + len(bad))
    if not seen:
        raise DataError(f"none of the {len(items)} images could be read ({len(skipped)} skipped); nothing to inspect")
    return probes, fields, tops, seen, skipped


def collect(nets, items, layer, fields, tops, channels="16") -> list[NetPatches]:
    """Choose each network's channels and cut their patches (only the kept images are decoded again)."""
    from embedkit.io.loader import load_item

    pre = nets[0].preprocessing
    tf = pre.transform_uint8()
    cache: dict[int, np.ndarray] = {}

    def image(i: int) -> np.ndarray:
        if i not in cache:
            try:
                img, _ = load_item(items[i])
            except (OSError, ValueError) as exc:
                raise DataError(f"{items[i].path!r} changed or became unreadable while it was inspected ({exc}); "
                                "run the command again") from exc
            cache[i] = tf(img).permute(1, 2, 0).numpy()
        return cache[i]

    out = []
    for net, rf, top in zip(nets, fields, tops):
        chosen = choose_channels(top, channels)
        means = top.means
        rows = []
        for c in chosen:
            row = []
            for value, i, y, x in top.hits(c):
                box = rf.box(y, x)
                row.append(Hit(items[i].path, value, y, x, box, crop_patch(image(i), box)))
            rows.append(row)
        out.append(NetPatches(net.label, layer, rf, chosen, [float(means[c]) for c in chosen], rows))
    return out


def inspect_patches(source, out, backbone: str = "efficientnet_lite0", layer: str = "blocks.2", weights="default",
                    compare_weights=None, channels="16", *, device="auto", batch_size=None, workers=None,
                    progress: bool = True, cell: int = 64, nets: list[LoadedNet] | None = None):
    """Top-9 patches of ``layer``'s channels over the images of ``source``: writes OUT.png and OUT.html.

    ``source`` is a folder, manifest, list file, code store folder or a list of paths. ``nets``
    (already loaded networks) replaces ``backbone``/``weights``/``compare_weights``.
    Returns a :class:`PatchesRun`.
    """
    from pathlib import Path

    from embedkit.inspect.activations import load_net
    from embedkit.inspect.outputs import write_outputs

    t0 = time.perf_counter()
    items = read_source(source)
    if nets is None:
        nets = [load_net(backbone, weights)] + ([load_net(backbone, compare_weights)] if compare_weights else [])
    _probes, fields, tops, seen, skipped = stream_top(nets, items, layer, device=device, batch_size=batch_size,
                                                      workers=workers, progress=progress)
    results = collect(nets, items, layer, fields, tops, channels)
    run = PatchesRun(results, seen, skipped)
    run.seconds = time.perf_counter() - t0
    run.outputs = write_outputs(run, Path(out), cell=cell)
    return run


def read_source(source) -> list:
    """The images of ``source``: a folder, manifest or list file (as ``embed``), or a code store's paths."""
    from pathlib import Path

    from embedkit.io.discover import discover

    if not isinstance(source, (list, tuple)) and (Path(source) / "meta.json").is_file():
        from embedkit.io.discover import Item
        from embedkit.store.codestore import CodeStore

        # a store's recorded paths are read only if each file still holds the bytes that were embedded
        # (as the galleries do): a path swapped for another file since is skipped, not shown as that row
        store = CodeStore.open(source)
        try:
            sha1 = [str(s or "") for s in store.column("sha1")]
        except (EmbedkitError, KeyError, ValueError):  # imported codes may record no content hash
            sha1 = [""] * len(store)
        return [Item(str(p), sha1=s) for p, s in zip(store.paths, sha1)]
    return discover(source, labels=False)


__all__ = ["TOP_K", "Hit", "NetPatches", "PatchesRun", "TopK", "choose_channels", "collect", "crop_patch",
           "inspect_patches", "parse_channels", "read_source", "stream_top"]
