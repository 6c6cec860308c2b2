"""`embedkit demo` (placeholder until implemented)."""

import click

from embedkit.errors import ConfigError


@click.command(name="demo", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args):
    """Not implemented yet."""
    raise ConfigError("'embedkit demo' is not available in this version")
