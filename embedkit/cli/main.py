"""Entry point: the ``embedkit`` click group and its error handling.

Every :class:`~embedkit.errors.EmbedkitError` becomes one ``error: ...`` line on
stderr and exit status 2; an interrupt says how to resume and exits 130.
"""

from __future__ import annotations

import sys

import click

from embedkit import __version__
from embedkit.errors import EmbedkitError


class EmbedkitGroup(click.Group):
    """A click group that turns embedkit's errors into one clear line and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EmbedkitError as exc:
            click.echo(f"error: {exc}", err=True)
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

    configure_logging()


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
