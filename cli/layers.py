"""`embedkit layers BACKBONE`: the names `--layer` takes, one a line (friendly names first, then every graph node)."""

from __future__ import annotations

import click

from embedkit.cli.options import backbone_name, verbosity_options


@click.command(name="layers")
@click.argument("backbone", callback=backbone_name)
@click.option("--nodes-only", is_flag=True, help="Print only the graph nodes, without the friendly names.")
@verbosity_options
def command(backbone, nodes_only, quiet, verbose):
    """List the code layers of BACKBONE (a registered name, timm:NAME or torchvision:NAME).

    First the backbone's friendly layer names as `NAME -> NODE` (the default one marked), then every node
    of the network's graph: `--layer` takes either. Traced on a randomly initialised network, so no
    weights are needed (nothing is downloaded).
    """
    from embedkit.models.features import layer_nodes
    from embedkit.models.registry import get_spec

    friendly, nodes = layer_nodes(backbone)
    if not nodes_only:
        default = get_spec(backbone).default_layer
        for name, target in friendly.items():
            click.echo(f"{name} -> {target}" + ("  (default)" if name == default else ""))
    for node in nodes:
        click.echo(node)
