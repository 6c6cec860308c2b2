"""Decoding: bounded cost per image (extreme aspect ratios, bombs) and EXIF orientation on every decode path."""

from __future__ import annotations

import resource
import sys

import numpy as np
import pytest
from PIL import Image

from embedkit.io.decode import MAX_ASPECT_RATIO, load_image, raw_jpeg, to_rgb
from embedkit.io.loader import ImageDataset, collate_skipping
from embedkit.io.discover import Item
from embedkit.models.preprocessing import Preprocessing


def _peak_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 2**20 if sys.platform == "darwin" else kb / 1024  # macOS reports bytes, Linux KiB


def test_extreme_aspect_ratio_is_skipped_with_a_reason_and_small_memory(tmp_path):
    strip = tmp_path / "strip.png"
    Image.new("L", (1, 12000), 255).save(strip, optimize=True)
    assert strip.stat().st_size < 300  # a few hundred bytes that would resize to 256 x 3,072,000 RGB
    with pytest.raises(ValueError, match=rf"extreme aspect ratio 1:12000 \(max 1:{MAX_ASPECT_RATIO}"):
        load_image(str(strip))
    ok = tmp_path / "wide.png"
    Image.new("RGB", (MAX_ASPECT_RATIO * 4, 4), (10, 20, 30)).save(ok)  # at the limit: still decoded
    assert load_image(str(ok))[0].size == (MAX_ASPECT_RATIO * 4, 4)

    # through the loader with the real preprocessing: a skipped row, and no GBs allocated on the way
    before = _peak_mb()
    ds = ImageDataset([Item(str(strip), "a"), Item(str(ok), "b")], Preprocessing().transform_uint8())
    idx, x, infos, bad = collate_skipping([ds[0], ds[1]])
    assert idx == [1] and tuple(x.shape) == (1, 3, 224, 224)
    assert bad == [(0, bad[0][1])] and bad[0][1].startswith("extreme aspect ratio 1:12000")
    assert _peak_mb() - before < 200


def test_raw_jpeg_refuses_extreme_aspect_ratio_so_load_image_gives_the_reason(tmp_path):
    p = tmp_path / "tall.jpg"
    Image.new("RGB", (8, 8 * (MAX_ASPECT_RATIO + 1)), (200, 0, 0)).save(p)
    assert raw_jpeg(str(p)) is None
    with pytest.raises(ValueError, match="extreme aspect ratio 1:33"):
        load_image(str(p))


def test_decompression_bomb_still_refused(tmp_path, monkeypatch):
    p = tmp_path / "big.png"
    Image.new("L", (400, 400)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    with pytest.raises(ValueError, match="corrupt or truncated: .*(decompression bomb|exceeds limit)"):
        load_image(str(p))


def _oriented_jpeg(path, orientation: int) -> np.ndarray:
    """Save a 60x40 JPEG whose stored pixels are left red / right blue, tagged with ``orientation``;
    return the displayed picture (what a viewer shows) as an array."""
    stored = Image.new("RGB", (60, 40), (230, 20, 20))
    stored.paste((20, 20, 230), (30, 0, 60, 40))
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, quality=95, exif=exif)
    from PIL import ImageOps

    return np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_jpeg_with_orientation_tag_decodes_as_displayed(tmp_path, orientation):
    p = tmp_path / f"o{orientation}.jpg"
    shown = _oriented_jpeg(p, orientation)
    img, info = load_image(str(p))
    want_size = (40, 60) if orientation in (6, 8) else (60, 40)
    assert img.size == want_size and (info["width"], info["height"]) == want_size
    assert np.abs(np.asarray(img, dtype=np.int16) - shown).max() <= 2
    # orientation 6 (rotate 90 clockwise to display): the stored left (red) half is on top
    if orientation == 6:
        top, bottom = np.asarray(img)[:25].mean((0, 1)), np.asarray(img)[-25:].mean((0, 1))
        assert top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]
    # the device-JPEG path must not hand these bytes to nvJPEG (which ignores EXIF): PIL decodes them
    assert raw_jpeg(str(p)) is None
    # a PIL image given directly (Backbone.embed_images) is turned upright too
    assert to_rgb(Image.open(p)).size == want_size


def test_upright_jpeg_still_goes_to_the_device_decoder(tmp_path):
    p = tmp_path / "up.jpg"
    _oriented_jpeg(p, 1)
    raw = raw_jpeg(str(p), want_sha1=True)
    assert raw is not None and raw[1]["width"] == 60 and len(raw[1]["sha1"]) == 40
    plain = tmp_path / "plain.jpg"
    Image.new("RGB", (30, 20), (1, 2, 3)).save(plain)  # no EXIF at all
    assert raw_jpeg(str(plain)) is not None and load_image(str(plain))[0].size == (30, 20)


def test_device_and_pil_decoders_agree_on_a_rotated_jpeg(tmp_path):
    import torch

    from embedkit.io.decode import decode_on_device

    p = tmp_path / "rot.jpg"
    _oriented_jpeg(p, 6)
    pre = Preprocessing()
    ds_raw = ImageDataset([Item(str(p), "")], pre.transform_uint8(), raw_jpeg=True)
    ds_pil = ImageDataset([Item(str(p), "")], pre.transform_uint8())
    _, x_raw, _, _ = collate_skipping([ds_raw[0]])
    batch, keep, failed = decode_on_device(list(x_raw) if isinstance(x_raw, list) else [t for t in x_raw], pre,
                                           torch.device("cpu"))
    _, x_pil, _, _ = collate_skipping([ds_pil[0]])
    assert keep == [0] and failed == []
    assert torch.equal(batch, x_pil)
