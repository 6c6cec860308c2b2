"""Entry point: the ``embedkit`` click group and its error handling.

Every :class:`~embedkit.errors.EmbedkitError` becomes one ``error: ...`` line on
stderr and exit status 2; an interrupt says how to resume and exits 130.
"""

from __future__ import annotations

import re
import sys

import click

from embedkit import __version__
from embedkit.errors import EmbedkitError


# Python spellings in the library's messages, as the CLI says them. "--overwrite (overwrite=True)" and
# "micro_batch (--micro-batch)": the flag alone; "head_init='logistic'": "--head-init logistic" where the command
# has that option; "(KNNIndex.search)": a Python API in parentheses, left out.
_FLAG_THEN_KWARG = re.compile(r"(--[\w-]+(?: [\w.-]+)?) \(\w+=[^()]*\)")
_KWARG_THEN_FLAG = re.compile(r"\b\w+(?:=[\w'\".-]+)? \((--[\w-]+(?: [\w.-]+)?)\)")
_KWARG = re.compile(r"\b([a-z][a-z0-9_]*)=('[^']*'|\"[^\"]*\"|[\w.*-]+)")
_PY_API = re.compile(r" \((?:[A-Z]\w+\.)\w+(?:\([^()]*\))?\)")


def cli_words(message: str, options: set) -> str:
    """``message`` with the Python spellings of the library replaced by the flags in ``options`` (``--name``)."""
    message = _FLAG_THEN_KWARG.sub(r"\1", message)
    message = _KWARG_THEN_FLAG.sub(r"\1", message)
    message = _PY_API.sub("", message)

    def flag(m):
        name, value = "--" + m.group(1).replace("_", "-"), m.group(2).strip("'\"")
        if name not in options:
            return m.group(0)
        if value in ("True", "False"):
            return name if value == "True" else f"no {name}"
        return f"{name} {value}"

    return _KWARG.sub(flag, message)


def _options(group: click.Group, ctx) -> set:
    """Every --flag of the invoked command (with its sub-commands): what an error may name in CLI words."""
    cmd = group.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
    found, todo = set(), [cmd] if cmd is not None else []
    while todo:
        c = todo.pop()
        found |= {o for p in c.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}
        todo += list(getattr(c, "commands", {}).values())
    return found


class EmbedkitGroup(click.Group):
    """A click group that turns embedkit's errors into one clear line and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EmbedkitError as exc:
            click.echo(f"error: {cli_words(str(exc), _options(self, ctx))}", err=True)
            ctx.exit(2)
        except (ImportError, RuntimeError) as exc:  # a torch/torchvision pair that cannot load: one line too
            from embedkit.versions import import_failure

            message = import_failure(exc)
            if message is None:
                raise
            click.echo(f"error: {message}", err=True)
            ctx.exit(2)
        except OSError as exc:  # a file system refusal (permissions, a vanished disk): one line, not a traceback
            click.echo(f"error: {exc.strerror or exc}" + (f": {exc.filename!r}" if exc.filename else ""), err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            # on its own line (a progress bar may be mid-line), and the advice only where it applies
            cmd = self.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
            resumable = cmd is not None and any(p.name == "resume" for p in getattr(cmd, "params", []))
            advice = "; run the same command with --resume to continue" if resumable else ""
            click.echo(f"\ninterrupted: what was committed is kept{advice}", err=True)
            ctx.exit(130)


@click.group(cls=EmbedkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="embedkit")
def app():
    """Neural codes from pretrained CNNs: embed, classify, find neighbours, fine-tune, view."""
    from embedkit.cli.options import configure_logging
    from embedkit.versions import check_torch_pair

    configure_logging()
    check_torch_pair()  # package metadata only (milliseconds): a mismatched pair is one line, not a traceback


# Sub-commands, in the order `embedkit --help` lists them. Each module imports only click at import time
# (torch and the stages are imported inside the commands), so --help and TAB completion stay fast.
COMMANDS = ("embed", "store", "classify", "neighbors", "finetune", "view", "inspect", "serve", "demo", "layers")


def _register():
    import importlib

    for name in COMMANDS:
        app.add_command(importlib.import_module(f"embedkit.cli.{name}").command)


_register()


def main(argv=None):
    """Console-script entry point."""
    return app.main(args=argv, prog_name="embedkit")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
