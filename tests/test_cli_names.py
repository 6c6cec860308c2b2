"""Option names a user can carry from one command to the next: --lr-drop vs classify's --gamma, -k, view --backend."""

from __future__ import annotations

import pytest
from click.testing import CliRunner


def app():
    import embedkit.cli.main

    return embedkit.cli.main.app


@pytest.mark.parametrize("spelling", ["--lr-drop", "--gamma"])
def test_finetune_lr_drop_and_its_old_spelling(spelling, tmp_path, monkeypatch):
    import embedkit.finetune.train

    seen = {}

    def fake(source, out, **options):
        seen.update(options)
        raise SystemExit(0)

    monkeypatch.setattr(embedkit.finetune.train, "finetune", fake)
    r = CliRunner().invoke(app(), ["finetune", str(tmp_path), "-o", str(tmp_path / "run"), spelling, "0.5"])
    assert r.exit_code == 0, r.output
    assert seen["gamma"] == 0.5
    assert ("--gamma is deprecated here, it is now --lr-drop" in r.output) is (spelling == "--gamma")
    help_text = CliRunner().invoke(app(), ["finetune", "--help"]).output
    assert "--lr-drop" in help_text and "--gamma" not in help_text


def test_view_backend_is_a_choice_from_the_library(tmp_path):
    from embedkit.view.project import BACKEND_CHOICES, BACKENDS

    assert set(BACKEND_CHOICES) == {"auto"} | {b for g, c, e in BACKENDS.values() for b in (g, c, *e)}
    r = CliRunner().invoke(app(), ["view", str(tmp_path), "-o", str(tmp_path / "m.png"), "--backend", "umap"])
    assert r.exit_code == 2 and "'umap' is not one of" in r.output and "'umap-learn'" in r.output


def test_top_k_is_dash_k():
    r = CliRunner().invoke(app(), ["classify", "predict", "--help"])
    assert "-k, --top-k" in r.output


def test_shell_completion_as_the_readme_documents_it(monkeypatch, capsys):
    from embedkit.cli.main import main

    monkeypatch.setenv("_EMBEDKIT_COMPLETE", "bash_complete")
    monkeypatch.setenv("COMP_WORDS", "embedkit classify pre")
    monkeypatch.setenv("COMP_CWORD", "2")
    with pytest.raises(SystemExit):
        main([])
    assert "plain,predict" in capsys.readouterr().out.splitlines()
