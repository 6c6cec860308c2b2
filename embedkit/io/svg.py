"""SVG illustrations rasterised on white with resvg (the optional ``svg`` extra: ``pip install "embedkit[svg]"``).

An SVG has no pixel size of its own: it is drawn with its shorter side at the size the backbone's
preprocessing resizes to (``Preprocessing.resize``, e.g. 256 for a 224 crop), so the resize that
follows leaves it as drawn. References to other files (``<image href="/etc/...">``, a relative path, a link
to ``/dev/zero``) are removed before drawing: a file is read only from the folder given, and only as itself.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

from PIL import Image

#: the shorter side an SVG is drawn at when the caller does not give the backbone's (most backbones resize to 256)
SVG_SIZE = 256
SVG_EXTENSIONS = (".svg",)
INSTALL = 'pip install "embedkit[svg]"'
#: the box of the first, tiny drawing that tells the orientation (and refuses extreme aspect ratios) cheaply
PROBE = 64

for _prefix, _uri in (("", "http://www.w3.org/2000/svg"), ("xlink", "http://www.w3.org/1999/xlink")):
    ET.register_namespace(_prefix, _uri)


def is_svg(data: bytes) -> bool:
    """Whether file content is SVG markup (sniffed, whatever the file's name)."""
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"<") and b"<svg" in head


def missing() -> str:
    """The skip reason / error of an SVG when the extra is not installed ("" when it is)."""
    try:
        import resvg_py  # noqa: F401
    except ImportError:
        return f"an SVG image: reading it needs the svg extra ({INSTALL})"
    return ""


def check_svg_support(paths, where) -> None:
    """Refuse, before any work, a job whose files include SVGs when the extra is missing (one line, the fix)."""
    from embedkit.errors import MissingDependencyError

    if not missing():
        return
    n = sum(1 for p in paths if str(p).lower().endswith(SVG_EXTENSIONS))
    if n:
        raise MissingDependencyError(f"{str(where)!r} holds {n} SVG file{'s' if n > 1 else ''}; reading SVG needs "
                                     f"the optional package resvg-py, which is not installed; fix: {INSTALL}")


def render_svg(data: bytes, size: int | None = None, check_size=None) -> Image.Image:
    """RGB drawing of SVG ``data`` on white, its shorter side ``size`` pixels (:data:`SVG_SIZE`).

    ``check_size(width, height)`` is the decoder's size rule (:func:`embedkit.io.decode.check_size`, which
    passes it: this module is below the decoder), applied to a small probe drawing before the full one.

    Raises ``ValueError`` (a skip reason) for markup resvg cannot draw, for an SVG more elongated
    than the decoder accepts, and when the extra is missing.
    """
    reason = missing()
    if reason:
        raise ValueError(reason)
    import resvg_py

    size = int(size or SVG_SIZE)
    svg = _local_only(data)
    try:
        probe = _draw(resvg_py, svg, width=PROBE, height=PROBE)  # fits the box: at most 64 x 64, cheap
        if check_size is not None:
            check_size(*probe.size)
        landscape = probe.width >= probe.height
        img = _draw(resvg_py, svg, **({"height": size} if landscape else {"width": size}))
    except ValueError as exc:
        if str(exc).startswith(("extreme aspect", "zero-sized")):
            raise
        raise ValueError(f"SVG that cannot be drawn: {str(exc)[:200]}") from exc
    canvas = Image.new("RGB", img.size, (255, 255, 255))
    canvas.paste(img, mask=img.getchannel("A"))
    return canvas


def _draw(resvg_py, svg: str, **box) -> Image.Image:
    png = resvg_py.svg_to_bytes(svg_string=svg, background="#ffffff", **box)
    return Image.open(io.BytesIO(bytes(png))).convert("RGBA")


def _local_only(data: bytes) -> str:
    """The SVG markup without references to other files (``href`` other than ``#id`` or ``data:``).

    expat (Python's parser) fetches no external entities and bounds entity expansion.
    """
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise ValueError(f"SVG that cannot be parsed: {exc}") from exc
    for el in root.iter():
        for attr in [a for a in el.attrib if a.rsplit("}", 1)[-1] == "href"]:
            if not el.attrib[attr].strip().startswith(("#", "data:")):
                del el.attrib[attr]
    return ET.tostring(root, encoding="unicode")
