"""HTML galleries: a store row's thumbnail is inlined only when the file still has the sha1 recorded for it."""

from __future__ import annotations

import base64
import hashlib
import io
import os
from html.parser import HTMLParser

import pytest
from PIL import Image

from embedkit.render.gallery import NO_CHECKSUM, NOT_THIS_STORES, checked_thumbnail_data_uri, write_gallery


class Page(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self, text: str):
        super().__init__()
        self.tags, self.text = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _png(path, colour=(200, 30, 30), size=(40, 30)) -> str:
    Image.new("RGB", size, colour).save(path)
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _inlined(page: Page) -> list[Image.Image]:
    out = []
    for tag, attrs in page.tags:
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
            out.append(Image.open(io.BytesIO(base64.b64decode(attrs["src"].split(",", 1)[1]))).convert("RGB"))
    return out


def test_inline_only_matching_sha1(tmp_path):
    good, secret = tmp_path / "good.png", tmp_path / "secret.png"
    sha_good = _png(good, (200, 30, 30))
    _png(secret, (30, 30, 200))
    items = [
        {"path": str(good), "caption": "match", "sha1": sha_good},
        {"path": str(secret), "caption": "crafted row: another file's sha1", "sha1": sha_good},
        {"path": str(tmp_path / "sub" / ".." / "secret.png"), "caption": "crafted ../ path", "sha1": "0" * 40},
        {"path": str(secret), "caption": "no sha1 recorded", "sha1": ""},
        {"path": str(secret), "caption": "user's own query"},  # no sha1 key: inlined
    ]
    out = write_gallery(tmp_path / "g.html", "t", [{"title": "s", "note": "n", "items": items}], thumb=32)
    text = out.read_text()
    page = Page(text)
    imgs = _inlined(page)
    assert len(imgs) == 2
    assert imgs[0].getpixel((5, 5))[0] > 150  # the good (red) file
    assert imgs[1].getpixel((5, 5))[2] > 150  # the query (blue), given by the user
    assert text.count(NOT_THIS_STORES.replace("'", "&#x27;")) == 2 and text.count(NO_CHECKSUM) == 1


def test_changed_file_is_not_inlined(tmp_path):
    p = tmp_path / "a.png"
    sha = _png(p)
    assert checked_thumbnail_data_uri(str(p), sha, 16).startswith("data:image/png;base64,")
    assert checked_thumbnail_data_uri(str(p), sha.upper(), 16) is not None
    _png(p, (0, 0, 0))  # replaced after embedding
    assert checked_thumbnail_data_uri(str(p), sha, 16) is None
    assert checked_thumbnail_data_uri(str(tmp_path / "missing.png"), sha, 16) is None
    assert checked_thumbnail_data_uri(str(tmp_path), sha, 16) is None  # a folder


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_device_files_are_never_read(tmp_path):
    assert checked_thumbnail_data_uri("/dev/zero", "0" * 40, 16) is None
    # not even as a user's query: a grey box, and the page is written at once
    page = Page(write_gallery(tmp_path / "g.html", "t", [{"title": "s", "items": [{"path": "/dev/zero"}]}],
                              thumb=16).read_text())
    assert _inlined(page)[0].getpixel((1, 1)) == (200, 200, 200)


def test_names_labels_and_titles_are_escaped(tmp_path):
    evil = "<img src=x onerror=alert(1)>'\".png"
    p = tmp_path / "x.png"
    sha = _png(p)
    sections = [{"title": f"query {evil} [<b>lab</b>]", "note": "<script>alert(2)</script>",
                 "items": [{"path": evil, "caption": f"#1 {evil}\n<i>label</i>", "sha1": sha, "ok": True},
                           {"path": str(p), "caption": "ok", "sha1": sha, "ok": False}]}]
    page = Page(write_gallery(tmp_path / "g.html", f"<title>{evil}", sections, thumb=16).read_text())
    allowed = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "div", "br", "img"}
    assert {t for t, _ in page.tags} <= allowed
    for tag, attrs in page.tags:
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
        if tag == "img":
            assert attrs["src"].startswith("data:image/png;base64,")
    assert sum(1 for t, _ in page.tags if t == "img") == 1  # the evil path's file does not exist: placeholder
    text = "".join(page.text)
    assert evil in text and "<script>alert(2)</script>" in text  # shown as text
    assert any(a.get("title") == evil for _, a in page.tags)
