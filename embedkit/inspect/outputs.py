"""The patches' outputs: a PNG grid (channels x 9 patches, one panel per network) and a self-contained HTML page.

The page holds its patches as inline PNG data URIs and has no link, script or external
reference: it opens offline and can be mailed. Every text from the data (file names) is
HTML-escaped; hovering a patch shows its image path and activation value.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image

from embedkit.atomic import write_text_atomic
from embedkit.inspect.figures import Panel, grid_figure

HTML_PATCH_PX = 96


def png_data_uri(rgb: np.ndarray, size: int = HTML_PATCH_PX) -> str:
    """An inline PNG data URI of an HxWx3 uint8 patch, scaled to ``size`` px (nearest: pixels stay visible)."""
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    img = img.resize((size, size), Image.NEAREST if max(img.size) < size else Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _net_title(net) -> str:
    return f"{net.label}: {net.layer}, {net.field.describe()}"


def write_png(run, path: Path, cell: int = 64) -> Path:
    """Channels x 9 patches per network, side by side; rows labelled with channel and mean activation."""
    panels = []
    for net in run.nets:
        cells = [[h.patch.astype(np.float32) / 255.0 for h in row] for row in net.hits]
        labels = [f"ch {c}\nmean {m:.2f}" for c, m in zip(net.channels, net.means)]
        panels.append(Panel(_net_title(net), cells, labels))
    title = f"Top-9 patches per channel over {run.images} images"
    return grid_figure(panels, path, cell, title=title, col_label="strongest -> weaker (one patch per image)")


def page(run, png_name: str | None = None) -> str:
    """The HTML text of the patches page (self-contained)."""
    style = ("body{font-family:sans-serif;margin:1em}.nets{display:flex;gap:2em;flex-wrap:wrap}"
             "table{border-collapse:collapse}th{font-size:11px;text-align:right;padding-right:6px;font-weight:normal}"
             "td{padding:1px}td img{width:%dpx;height:%dpx;image-rendering:pixelated;border:1px solid #ccc}"
             "h2{font-size:1em}.sk{font-size:11px;color:#555}" % (HTML_PATCH_PX, HTML_PATCH_PX))
    out = ["<!doctype html><html><head><meta charset='utf-8'>",
           f"<title>{_esc('embedkit inspect: top-9 patches')}</title><style>{style}</style></head><body>",
           f"<h1>Top-9 patches per channel ({run.images} images, {len(run.skipped)} skipped)</h1>",
           "<p>Each row is one channel of the layer; its nine patches are the images where it answers most, "
           "each cut at its strongest position through the layer's receptive field. Hover a patch for its "
           "image and activation." + (f" Figure: {_esc(png_name)}." if png_name else "") + "</p>",
           "<div class='nets'>"]
    for net in run.nets:
        out.append(f"<div class='net'><h2>{_esc(_net_title(net))}</h2><table>")
        for c, m, row in zip(net.channels, net.means, net.hits):
            out.append(f"<tr><th>channel {int(c)}<br>mean {m:.3f}</th>")
            for h in row:
                tip = f"{_esc(h.path)}&#10;activation {h.value:.4g} at ({h.y}, {h.x}); input box {_esc(h.box)}"
                out.append(f"<td><img src='{png_data_uri(h.patch)}' alt='{_esc(Path(h.path).name)}' "
                           f"title='{tip}'></td>")
            out.append("</tr>")
        out.append("</table></div>")
    out.append("</div>")
    if run.skipped:
        out.append(f"<h2>Skipped ({len(run.skipped)})</h2><ul class='sk'>")
        out.extend(f"<li>{_esc(p)}: {_esc(r)}</li>" for p, r in run.skipped)
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out)


def write_outputs(run, out: Path, cell: int = 64) -> tuple[Path, Path]:
    """Write ``OUT.png`` and ``OUT.html`` (whichever suffix OUT has); returns both paths."""
    png, page_path = out.with_suffix(".png"), out.with_suffix(".html")
    write_png(run, png, cell)
    write_text_atomic(page_path, page(run, png.name))
    return png, page_path


__all__ = ["page", "png_data_uri", "write_outputs", "write_png"]
