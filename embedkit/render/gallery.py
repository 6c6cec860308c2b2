"""Self-contained HTML galleries of thumbnails (inline images, opens without a network).

A gallery inlines pictures of files named in a code store's items table, and that
table may come from elsewhere (an imported store, a crafted manifest with absolute or
``../`` paths). So a store row's thumbnail is inlined only when the file's bytes still
have the sha1 recorded for that row at embed time (:func:`checked_thumbnail_data_uri`);
otherwise the page shows a placeholder instead of whatever file the path now names.
Files the user gave directly (query images) carry no recorded sha1 and are inlined.
Every file name, label and caption is HTML-escaped.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import os
from pathlib import Path
from typing import Iterable

from PIL import Image

from embedkit.atomic import write_text_atomic

#: files larger than this are not read for a thumbnail (no image embedkit embeds needs more)
MAX_THUMBNAIL_FILE_BYTES = 256 * 2**20

NOT_THIS_STORES = "(not inlined: file changed or not this store's)"
NO_CHECKSUM = "(not inlined: no checksum recorded for this row)"


def thumbnail(path: str, size: int = 128, fill=(200, 200, 200)) -> Image.Image:
    """An RGB thumbnail of an image file within ``size`` px; a ``fill`` square when it cannot be read."""
    from embedkit.io.decode import load_image

    try:
        img, _ = load_image(path)
        img.thumbnail((size, size))
    except (OSError, ValueError):
        img = Image.new("RGB", (size, size), fill)
    return img


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _png_data_uri(img: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(_png_bytes(img)).decode("ascii")


def thumbnail_data_uri(path: str, size: int = 128) -> str:
    """A small inline PNG data URI of an image file; a grey box when it cannot be read.

    For files named by a store's items table prefer :func:`checked_thumbnail_data_uri`.
    """
    return _png_data_uri(thumbnail(path, size))


def _read_regular_file(path: str) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of at most MAX_THUMBNAIL_FILE_BYTES, else None
    (no devices, FIFOs or folders: ``/dev/zero`` in an items table must not hang the page)."""
    from embedkit.io.decode import read_file

    try:
        return read_file(path, MAX_THUMBNAIL_FILE_BYTES)
    except (OSError, ValueError):
        return None


def checked_thumbnail_png(path: str, expected_sha1: str | None, size: int = 128,
                          fill=(200, 200, 200)) -> bytes | None:
    """PNG bytes of a thumbnail of ``path`` only if its bytes have sha1 ``expected_sha1``; else None.

    The bytes are read once, checked, then decoded (no window between check and decode). An
    unreadable image whose sha1 matches gives a ``fill`` box, like :func:`thumbnail_data_uri`.
    """
    if not expected_sha1:
        return None
    data = _read_regular_file(path)
    if data is None or hashlib.sha1(data).hexdigest() != str(expected_sha1).strip().lower():
        return None
    return _png_bytes(_thumb_of_bytes(data, size, fill))


def checked_thumbnail_data_uri(path: str, expected_sha1: str | None, size: int = 128,
                               fill=(200, 200, 200)) -> str | None:
    """:func:`checked_thumbnail_png` as an inline data URI (None when the file is not the recorded one)."""
    png = checked_thumbnail_png(path, expected_sha1, size, fill)
    return None if png is None else "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _thumb_of_bytes(data: bytes | None, size: int, fill) -> Image.Image:
    from embedkit.io.decode import decode_bytes

    try:
        if data is None:
            raise ValueError("not a readable regular file")
        img, _ = decode_bytes(data)
        img.thumbnail((size, size))
    except (OSError, ValueError):
        img = Image.new("RGB", (size, size), fill)
    return img


def item_image_html(item: dict, thumb: int = 128) -> str:
    """The ``<img>`` (or placeholder) of one gallery item; see :func:`write_gallery` for the ``sha1`` rule."""
    path = str(item["path"])
    if "sha1" not in item:  # a file the user gave (a query image): no recorded checksum to hold it to
        uri = _png_data_uri(_thumb_of_bytes(_read_regular_file(path), thumb, (200, 200, 200)))
    else:
        uri = checked_thumbnail_data_uri(path, item["sha1"], thumb)
        if uri is None:
            text = NOT_THIS_STORES if item["sha1"] else NO_CHECKSUM
            return f"<div class='ph'>{html.escape(text)}</div>"
    return f"<img alt='' src='{uri}'>"


def write_gallery(path: str | os.PathLike, title: str, sections: Iterable[dict], thumb: int = 128) -> Path:
    """Write an HTML page of thumbnail rows (self-contained; written atomically).

    ``sections``: dicts with ``title`` and ``items`` and an optional ``note`` (a line under the
    title). Each item is a dict with ``path`` and ``caption`` (plain text; may contain newlines),
    optional ``ok`` (True draws a green border, False red) and ``sha1``: for a row of a code store
    pass the sha1 recorded for it (``store.column("sha1")[row]``): the thumbnail is inlined only
    if the file still has those bytes, else a placeholder says why. Leave ``sha1`` out only for
    files the user named directly (query images). Every text is HTML-escaped.
    """
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>",
           "body{font-family:sans-serif;margin:1em}h2{font-size:1.05em;margin:1.2em 0 .3em;word-wrap:break-word}",
           ".note{font-size:12px;color:#555;margin:0 0 .4em}",
           ".row{display:flex;flex-wrap:wrap;gap:8px}.it{width:%dpx;font-size:11px;word-wrap:break-word}" % (thumb + 8),
           ".it img,.it .ph{width:%dpx;height:%dpx;object-fit:contain;border:3px solid #ddd;box-sizing:content-box}"
           % (thumb, thumb),
           ".it .ph{display:flex;align-items:center;justify-content:center;text-align:center;background:#f4f4f4;"
           "color:#777;font-size:10px}",
           ".ok img,.ok .ph{border-color:#2a2}.bad img,.bad .ph{border-color:#d22}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    for sec in sections:
        out.append(f"<h2>{html.escape(str(sec.get('title', '')))}</h2>")
        if sec.get("note"):
            out.append(f"<div class='note'>{html.escape(str(sec['note']))}</div>")
        out.append("<div class='row'>")
        for it in sec.get("items", []):
            cls = {True: " ok", False: " bad"}.get(it.get("ok"), "")
            cap = html.escape(str(it.get("caption", ""))).replace("\n", "<br>")
            out.append(f"<div class='it{cls}' title='{html.escape(str(it['path']))}'>"
                       f"{item_image_html(it, thumb)}<div>{cap}</div></div>")
        out.append("</div>")
    out.append("</body></html>")
    return write_text_atomic(path, "\n".join(out))
