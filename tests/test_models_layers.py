"""`embedkit layers BACKBONE`: friendly names with their nodes, then every graph node, one a line."""

from __future__ import annotations

from click.testing import CliRunner

from embedkit import Backbone


def _layers(*args):
    import embedkit.cli.main

    return CliRunner().invoke(embedkit.cli.main.app, ["layers", *args])


def test_layers_lists_friendly_names_then_every_node():
    r = _layers("efficientnet_lite0")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == "pool -> global_pool.flatten  (default)"
    assert "logits -> classifier" in lines and "head -> bn2" in lines
    nodes = lines[lines.index("x"):]
    assert "blocks.4.0.conv_pw" in nodes and "global_pool.flatten" in nodes and len(nodes) == len(set(nodes)) > 50


def test_layers_of_any_timm_model_without_weights_and_nodes_work_as_layer():
    r = _layers("timm:test_vit")
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert "penultimate -> input of the classifier head  (default)" in lines
    assert "logits -> output of the classifier head" in lines
    node = "blocks.2.mlp.fc2"
    assert node in lines
    assert Backbone("timm:test_vit", layer=node, weights="none", device="cpu").dim == 64
    only = _layers("timm:test_vit", "--nodes-only").output.splitlines()
    assert not any("->" in line for line in only) and node in only


def test_layers_of_an_unknown_backbone_is_one_error_line():
    r = _layers("no_such_net_v9")
    assert r.exit_code == 2 and r.output.startswith("error: backbone 'no_such_net_v9' is not known")
