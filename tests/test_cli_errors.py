"""CLI errors in CLI words, arguments checked before the seconds of torch imports, and layer errors that help."""

from __future__ import annotations

import subprocess
import sys

import click
from click.testing import CliRunner

from embedkit.cli.main import _options, app, cli_words


def _run_without_torch(args) -> tuple[str, bool]:
    """(stderr+stdout, whether torch was imported) of `embedkit ARGS` in a fresh interpreter."""
    code = ("import sys\nfrom embedkit.cli.main import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('torch imported:', 'torch' in sys.modules)" % (list(args),))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    return out, "torch imported: True" in out


def _opts(command: str) -> set:
    ctx = click.Context(app)
    ctx.invoked_subcommand = command
    return _options(app, ctx)


def test_library_spellings_become_flags_of_the_command():
    fin, nb = _opts("finetune"), _opts("neighbors")
    assert cli_words("'x' is already a code store; add new images with --append (append=True) or replace it with "
                     "--overwrite (overwrite=True)", _opts("embed")) == \
        "'x' is already a code store; add new images with --append or replace it with --overwrite"
    assert cli_words("head_init='logistic' fits the head; use --strategy head-then-top, or --head-init random", fin) \
        == "--head-init logistic fits the head; use --strategy head-then-top, or --head-init random"
    assert cli_words("micro_batch (--micro-batch) is not used by engine='ray' (--engine ray); leave it out",
                     _opts("embed")) == "--micro-batch is not used by --engine ray; leave it out"
    assert cli_words("search it with query codes from Python (KNNIndex.search)", nb) == \
        "search it with query codes from Python"
    assert cli_words("use backend='torch' for exact GPU search", nb) == "use --backend torch for exact GPU search"
    # a keyword the command has no option for stays as it is (it is not a CLI word)
    assert cli_words("use storage='memory'", nb) == "use storage='memory'"


def test_refusals_of_embed_come_before_torch_and_in_cli_words(tmp_path, shapes_dir):
    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(tmp_path / "s"), "-q", "--weights", "none",
                                 "--workers", "0"])
    assert r.exit_code == 0, r.output
    out, torch = _run_without_torch(["embed", str(shapes_dir), "-o", str(tmp_path / "s")])
    assert "is already a code store; add new images with --append or replace it with --overwrite" in out, out
    assert "=True" not in out and not torch, out
    out, torch = _run_without_torch(["embed", str(shapes_dir), "-o", str(tmp_path / "t"), "--num-workers", "2"])
    assert "error: --num-workers 2: only used with --engine ray; add --engine ray or leave it out" in out, out
    assert not torch and not (tmp_path / "t").exists()


def test_a_near_miss_backbone_name_fails_before_torch_with_did_you_mean(tmp_path, shapes_dir):
    for args in (["embed", str(shapes_dir), "-o", str(tmp_path / "x"), "--backbone", "efficientnet_lit0"],
                 ["layers", "efficientnet_lite"], ["inspect", "patches", str(shapes_dir), "-o", str(tmp_path / "p.png"),
                                                   "--backbone", "resnet5"],
                 ["finetune", str(shapes_dir), "-o", str(tmp_path / "f"), "--backbone", "efficientnet_lit0"]):
        out, torch = _run_without_torch(args)
        assert "did you mean" in out and not torch, out
    assert "did you mean efficientnet_lite0?" in _run_without_torch(["layers", "efficientnet_lit0"])[0]


def test_builtin_names_known_without_torch_are_the_registry():
    from embedkit.defaults import BUILTIN_BACKBONES
    from embedkit.models.registry import list_backbones

    assert sorted(BUILTIN_BACKBONES) == list_backbones()


def test_bad_layer_for_embed_names_the_backbones_layers_and_the_real_command(tmp_path, shapes_dir):
    r = CliRunner().invoke(app, ["embed", str(shapes_dir), "-o", str(tmp_path / "s"), "--layer", "nope",
                                 "--weights", "none", "-q"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "its layers are pool, head, logits" in r.output and "`embedkit layers efficientnet_lite0`" in r.output
    r = CliRunner().invoke(app, ["layers", "efficientnet_lite0"])  # the command the message names works
    assert r.exit_code == 0 and "pool -> " in r.output


def test_bad_layer_for_inspect_patches_is_one_whole_message(tmp_path, shapes_dir):
    r = CliRunner().invoke(app, ["inspect", "patches", str(shapes_dir), "-o", str(tmp_path / "p.png"),
                                 "--layer", "blocks.9.nope", "--weights", "none", "-q"])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: layer 'blocks.9.nope'"), r.output
    assert lines[0].count("error") == 1 and "ConfigError" not in lines[0] and lines[0].endswith(
        "`embedkit layers efficientnet_lite0` lists every one)"), lines[0]
