"""Self-contained HTML galleries of thumbnails (inline images, opens without a network)."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Iterable

from PIL import Image

from embedkit.atomic import write_text_atomic


def thumbnail(path: str, size: int = 128, fill=(200, 200, 200)) -> Image.Image:
    """An RGB thumbnail of an image file within ``size`` px; a ``fill`` square when it cannot be read."""
    from embedkit.io.decode import load_image

    try:
        img, _ = load_image(path)
        img.thumbnail((size, size))
    except (OSError, ValueError):
        img = Image.new("RGB", (size, size), fill)
    return img


def thumbnail_data_uri(path: str, size: int = 128) -> str:
    """A small inline PNG data URI of an image file; a grey box when it cannot be read."""
    img = thumbnail(path, size)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def write_gallery(path: str | os.PathLike, title: str, sections: Iterable[dict], thumb: int = 128) -> Path:
    """Write an HTML page of thumbnail rows.

    ``sections``: dicts with ``title`` and ``items``; each item is a dict with
    ``path`` and ``caption`` (plain text; may contain newlines) and optional ``ok``
    (True draws a green border, False red). Written atomically.
    """
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>",
           "body{font-family:sans-serif;margin:1em}h2{font-size:1.05em;margin:1.2em 0 .3em}",
           ".row{display:flex;flex-wrap:wrap;gap:8px}.it{width:%dpx;font-size:11px;word-wrap:break-word}" % (thumb + 8),
           ".it img{width:%dpx;height:%dpx;object-fit:contain;border:3px solid #ddd}" % (thumb, thumb),
           ".ok img{border-color:#2a2}.bad img{border-color:#d22}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    for sec in sections:
        out.append(f"<h2>{html.escape(str(sec.get('title', '')))}</h2><div class='row'>")
        for it in sec.get("items", []):
            cls = {True: " ok", False: " bad"}.get(it.get("ok"), "")
            cap = html.escape(str(it.get("caption", ""))).replace("\n", "<br>")
            out.append(f"<div class='it{cls}' title='{html.escape(str(it['path']))}'>"
                       f"<img src='{thumbnail_data_uri(str(it['path']), thumb)}'><div>{cap}</div></div>")
        out.append("</div>")
    out.append("</body></html>")
    return write_text_atomic(path, "\n".join(out))
