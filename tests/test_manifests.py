"""CSV files a user gives: manifests (BOM, header without path, duplicate rows, a 20 MB cell, a URI that
cannot be read), split files and override tables: one rule set, one-line errors."""

from __future__ import annotations

import pytest
from helpers import captured_logs

from embedkit.errors import ConfigError
from embedkit.io.discover import iter_items


@pytest.fixture
def imgs(shapes_dir):
    return sorted((shapes_dir / "circle").iterdir())[:3]


def test_a_bom_does_not_hide_the_header(tmp_path, imgs):
    m = tmp_path / "m.csv"
    m.write_text("\ufefflabel,path\n" + "".join(f"round,{p}\n" for p in imgs), encoding="utf-8")
    items = list(iter_items(m))
    assert [it.path for it in items] == [str(p) for p in imgs] and {it.label for it in items} == {"round"}


@pytest.mark.parametrize("header", ["file,label", "filename,class", "image"])
def test_a_header_without_a_path_column_is_refused_not_read_as_data(tmp_path, imgs, header):
    m = tmp_path / "m.csv"
    m.write_text(header + "\n" + "".join(f"{p},x\n" for p in imgs))
    with pytest.raises(ConfigError, match=rf"has the header '{header}' without a path column; name the column"):
        list(iter_items(m))


def test_headerless_rows_are_still_data(tmp_path, imgs):
    m = tmp_path / "m.csv"
    m.write_text("".join(f"{p.name},x\n" for p in imgs))
    m.rename(imgs[0].parent / "m.csv")
    assert [it.path for it in iter_items(imgs[0].parent / "m.csv")] == [str(p) for p in imgs]


def test_duplicate_rows_are_read_once(tmp_path, imgs):
    m = tmp_path / "m.csv"
    m.write_text("path,label\n" + "".join(f"{p},a\n" for p in imgs) + f"{imgs[1]},b\n{imgs[0]},a\n")
    with captured_logs() as logs:
        items = list(iter_items(m))
    assert [(it.path, it.label) for it in items] == [(str(p), "a") for p in imgs]
    assert "lists 2 path(s) more than once" in logs.text


def test_a_20_mb_cell_is_one_line_in_every_csv_input(tmp_path, imgs):
    from embedkit.classify.baseline import read_overrides
    from embedkit.splits import split_from_file

    huge = "x" * (20 * 2**20)
    m = tmp_path / "m.csv"
    m.write_text(f"path,label\n{imgs[0]},a\n{huge},b\n")
    with pytest.raises(ConfigError, match=r"manifest .* cannot be read as CSV at line \d+ \(field larger than"):
        list(iter_items(m))
    (tmp_path / "split.csv").write_text(f"{imgs[0]},train\n{huge},test\n")
    with pytest.raises(ConfigError, match="split file .* cannot be read as CSV"):
        split_from_file([str(imgs[0])], tmp_path / "split.csv")
    (tmp_path / "o.csv").write_text(f"label,imagenet\ncat,{huge}\n")
    with pytest.raises(ConfigError, match="override table .* cannot be read as CSV"):
        read_overrides(tmp_path / "o.csv")


def test_an_unreadable_uri_is_a_skipped_row_not_an_abort(monkeypatch):
    import ftplib

    fsspec = pytest.importorskip("fsspec")
    from embedkit.io.loader import ImageDataset
    from embedkit.io.discover import Item

    class Refusing:  # what fsspec's FTP filesystem does when the server refuses the login mid-read
        def open(self):
            return self

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def fileno(self):
            raise AttributeError("fileno")

        def read(self, n=-1):
            raise ftplib.error_perm("530 Login incorrect.")

    monkeypatch.setattr(fsspec, "open", lambda *a, **k: Refusing())
    ds = ImageDataset([Item("ftp://ftp.example.org/x.png")], transform=lambda img: img)
    assert ds[0] == (0, None, "cannot read 'ftp://ftp.example.org/x.png': error_perm: 530 Login incorrect.")
