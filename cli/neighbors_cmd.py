"""`embedkit neighbors` (placeholder until implemented)."""

import click

from embedkit.errors import ConfigError


@click.command(name="neighbors", context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def command(args):
    """Not implemented yet."""
    raise ConfigError("'embedkit neighbors' is not available in this version")
