"""Decoding images robustly: any PIL mode to RGB, bad files as a reason instead of an exception.

Every decodable image becomes RGB in its displayed orientation: the EXIF
orientation tag is applied (``PIL.ImageOps.exif_transpose``), and grayscale,
palette, CMYK, 16-bit and RGBA (composited on white) are converted. Corrupt,
truncated, empty or non-image files, decompression bombs and images more
elongated than 1:32 (:data:`MAX_ASPECT_RATIO`) raise ``ValueError`` with a
short reason, which the loaders turn into a ``skipped`` row. JPEGs can also be
handed over undecoded and decoded on the compute device (:func:`decode_on_device`,
nvJPEG on CUDA); those with an EXIF rotation go through PIL instead.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# PIL refuses truncated files by default, which is what we want: a truncated
# file is listed as skipped rather than embedded with a grey bottom half.
ImageFile.LOAD_TRUNCATED_IMAGES = False

#: Largest long side / short side ratio decoded. Preprocessing resizes the *short* side to
#: ``resize`` (e.g. 256), so the long side grows with the ratio: a 135-byte 1x12000 PNG would
#: become 256 x 3,072,000 pixels (GBs). At 1:32 the resized image is at most 256 x 8192 RGB
#: (about 6 MB); wider panoramas and banners are skipped with the reason.
MAX_ASPECT_RATIO = 32

EXIF_ORIENTATION = 0x0112

#: Largest file read, checked before reading: twice an uncompressed RGB image at PIL's pixel limit
#: (``Image.MAX_IMAGE_PIXELS``, the other bound). Without it a 2 GiB sparse file costs GBs of RAM
#: before PIL refuses it, and a link to ``/dev/zero`` is read until memory runs out.
MAX_FILE_BYTES = 512 * 2**20


def too_large(size: int, limit: int | None = None) -> str:
    """The skip reason of a file over the byte limit ("" when it is within it)."""
    limit = MAX_FILE_BYTES if limit is None else limit
    return f"file too large ({size:,} bytes; at most {limit:,} are read)" if size > limit else ""


def check_size(width: int, height: int) -> None:
    """Raise ``ValueError`` (a skip reason) for a zero-sized image or one more elongated than 1:MAX_ASPECT_RATIO.

    Called on the header's size, before any pixel is decoded.
    """
    if width <= 0 or height <= 0:
        raise ValueError("zero-sized image")
    short, long = min(width, height), max(width, height)
    if long > MAX_ASPECT_RATIO * short:
        raise ValueError(f"extreme aspect ratio 1:{long / short:.0f} (max 1:{MAX_ASPECT_RATIO}; {width}x{height})")


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation tag of ``img`` (1 = as stored; 2-8 = flip/rotate to display); 1 when absent or unreadable."""
    try:
        value = img.getexif().get(EXIF_ORIENTATION, 1)
        return int(value) if value in range(1, 9) else 1
    except Exception:  # malformed EXIF: the pixels are still usable, shown as stored
        return 1


def upright(img: Image.Image) -> Image.Image:
    """``img`` in its displayed orientation (EXIF orientation applied, tag removed); ``img`` itself when upright."""
    if exif_orientation(img) == 1:
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose the image
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL image to RGB in its displayed orientation (EXIF orientation applied);
    transparency is composited on white (illustrations are drawn on white)."""
    if getattr(img, "is_animated", False):
        img.seek(0)
    img = upright(img)
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit / float greyscale: rescale to 8 bits instead of clipping to white.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        canvas = Image.new("RGB", img.size, (255, 255, 255))
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    return img.convert("RGB")


def load_image(path: str, want_sha1: bool = False, svg_size: int | None = None) -> tuple[Image.Image, dict]:
    """Decode ``path`` to an RGB image; returns ``(image, info)`` with bytes, width, height (and sha1).

    Raises ``ValueError`` with a short reason for anything that is not a usable image, a
    decompression bomb (PIL's ``Image.MAX_IMAGE_PIXELS``) or an image more elongated than
    1:``MAX_ASPECT_RATIO`` (refused from the header, before decoding). An SVG is drawn on white with its
    shorter side ``svg_size`` pixels (the backbone's resize; see :mod:`embedkit.io.svg`).
    """
    return decode_bytes(read_file(path), want_sha1, svg_size)


def read_file(path: str, limit: int | None = None) -> bytes:
    """The bytes of a regular file (or URI) of at most ``limit`` bytes (:data:`MAX_FILE_BYTES`).

    Raises ``ValueError`` (a skip reason) for a FIFO, device, socket or folder (:func:`open_file`) and
    for a file over the limit, before reading it. At most ``limit + 1`` bytes are ever read.
    """
    from embedkit.io.discover import is_uri

    limit = MAX_FILE_BYTES if limit is None else int(limit)
    try:
        with open_file(path) as f:
            size = _size(f)
            if size is not None and too_large(size, limit):
                raise ValueError(too_large(size, limit))
            data = f.read(limit + 1)
    except (ValueError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - a remote filesystem's own errors (ftplib.error_perm...): a skip reason
        if not is_uri(str(path)):
            raise
        raise ValueError(f"cannot read {str(path)!r}: {type(exc).__name__}: {_first_line(exc)}") from exc
    if len(data) > limit:  # a URI without a size, or a file that grew
        raise ValueError(f"file too large (over {limit:,} bytes)")
    return data


def _size(f) -> int | None:
    """The size of an open file; None when unknown (a stream of some URIs)."""
    try:
        return os.fstat(f.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # an fsspec stream: ask it for the size if it knows
        size = getattr(f, "size", None)
        return int(size) if isinstance(size, int) else None


def open_file(path: str):
    """Open a regular local file, or a URI (``s3://``, ``gs://``, ``file://``...) through fsspec when it is
    installed. Anything else (a FIFO, a device, a folder) and any failure to open a URI is a ``ValueError``.

    A local file is opened non-blocking (a plain ``open`` of a FIFO waits for a writer for ever) and its
    kind is taken from the open descriptor: a file swapped after a check cannot slip through.
    """
    from embedkit.io.discover import is_uri, not_regular

    if not is_uri(str(path)):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            reason = not_regular(os.fstat(fd).st_mode)
            if reason:
                raise ValueError(reason)
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
    try:
        import fsspec
    except ImportError as exc:
        raise ValueError(f"reading {str(path)!r} needs fsspec and the filesystem's package (e.g. s3fs)") from exc
    try:
        return fsspec.open(str(path), "rb").open()
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - an unknown scheme, its package missing, a refused connection...
        raise ValueError(f"cannot open {str(path)!r}: {type(exc).__name__}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "no details")[:200]


def decode_bytes(data: bytes, want_sha1: bool = False, svg_size: int | None = None) -> tuple[Image.Image, dict]:
    """:func:`load_image` of a file's bytes already read (e.g. checked against a recorded sha1 first)."""
    from embedkit.io.svg import is_svg, render_svg

    if not data:
        raise ValueError("empty file")
    if is_svg(data):
        img = render_svg(data, svg_size, check_size)
        check_size(*img.size)
        return img, _info(data, img, want_sha1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            check_size(*img.size)
            img.load()
        img = to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        reason = "not an image" if isinstance(exc, UnidentifiedImageError) else f"corrupt or truncated: {exc}"
        raise ValueError(reason) from exc
    check_size(img.width, img.height)
    return img, _info(data, img, want_sha1)


def _info(data: bytes, img: Image.Image, want_sha1: bool) -> dict:
    info = {"bytes": len(data), "width": img.width, "height": img.height}
    if want_sha1:
        info["sha1"] = hashlib.sha1(data).hexdigest()
    return info


JPEG_START, JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"


def raw_jpeg(path: str, want_sha1: bool = False):
    """``(bytes as a uint8 tensor, info)`` of a complete RGB or greyscale JPEG, else None.

    Only the header is parsed (no decoding). Anything else (other formats, CMYK,
    a file without its end marker, i.e. truncated, a non-trivial EXIF orientation,
    an extreme aspect ratio) returns None and goes through :func:`load_image`, which
    rotates/converts it or gives the reason to skip it, so both decoders agree.
    """
    import torch

    data = read_file(path)
    if not data.startswith(JPEG_START) or not data.rstrip(b"\x00\r\n ").endswith(JPEG_END):
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode not in ("RGB", "L"):
                return None
            w, h = im.size
            check_size(w, h)
            if exif_orientation(im) != 1:  # nvJPEG ignores EXIF: let PIL turn it upright
                return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None
    info = {"bytes": len(data), "width": w, "height": h}
    if want_sha1:
        info["sha1"] = hashlib.sha1(data).hexdigest()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8), info


def decode_on_device(samples: list, pre, device):
    """Finish a batch whose JPEGs came undecoded: decode them with torchvision.io on ``device``
    (nvJPEG on CUDA), resize and centre-crop them there like ``pre.transform_uint8()``.

    ``samples`` mixes ready uint8 crops (3-D) and JPEG bytes (1-D). Returns
    ``(uint8 batch on device or None, kept positions, [(position, reason)])``. Only a file the CPU
    decoder refuses too is "corrupt": a GPU out-of-memory or CUDA error decodes (or resizes) on the CPU instead.
    """
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    pos = [k for k, t in enumerate(samples) if t.ndim == 1]
    decoded, failed = _decode_jpegs({k: samples[k] for k in pos}, device) if pos else ({}, {})
    interp = InterpolationMode(pre.interpolation)
    out, keep = [], []
    for k, t in enumerate(samples):
        if k in failed:
            continue
        if t.ndim == 1:
            t = decoded[k]
            try:
                t = F.center_crop(F.resize(t, [pre.resize], interpolation=interp, antialias=True), [pre.input_size])
            except torch.OutOfMemoryError:  # a full-resolution photo the GPU has no room to resize
                _free_cuda()
                t = F.center_crop(F.resize(t.cpu(), [pre.resize], interpolation=interp, antialias=True),
                                  [pre.input_size])
        out.append(t.to(device, non_blocking=True))
        keep.append(k)
    return (torch.stack(out) if out else None), keep, sorted(failed.items())


def _free_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _decode_jpegs(data: dict, device) -> tuple[dict, dict]:
    """``({position: RGB uint8 tensor}, {position: reason})`` of JPEG bytes: batched on ``device``; the
    batch on the CPU after an out-of-memory; one by one when one file fails the batched call."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    keys = list(data)
    try:
        return dict(zip(keys, decode_jpeg([data[k] for k in keys], mode=ImageReadMode.RGB, device=device))), {}
    except torch.OutOfMemoryError:
        _free_cuda()
        try:
            return dict(zip(keys, decode_jpeg([data[k] for k in keys], mode=ImageReadMode.RGB, device="cpu"))), {}
        except RuntimeError:
            pass
    except RuntimeError:  # a bad file (or a CUDA error) fails the batched call: decode one by one
        pass
    decoded, failed = {}, {}
    for k in keys:
        try:
            decoded[k] = decode_jpeg(data[k], mode=ImageReadMode.RGB, device=device)
            continue
        except torch.OutOfMemoryError:
            _free_cuda()
        except RuntimeError:  # the bitstream or the device: the CPU decoder tells them apart
            pass
        try:
            decoded[k] = decode_jpeg(data[k], mode=ImageReadMode.RGB, device="cpu")
        except RuntimeError as exc:
            failed[k] = f"corrupt JPEG: {exc}"
    return decoded, failed
