"""`embedkit view` (placeholder until implemented)."""

import click

from embedkit.errors import ConfigError


@click.command(name="view", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args):
    """Not implemented yet."""
    raise ConfigError("'embedkit view' is not available in this version")
