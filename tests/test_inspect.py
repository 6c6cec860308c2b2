"""embedkit inspect: receptive fields from the network, filters, top-9 patches, the HTML page and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from embedkit.errors import ConfigError
from embedkit.inspect.filters import first_conv
from embedkit.inspect.patches import TopK, inspect_patches, parse_channels
from embedkit.inspect.activations import LoadedNet, Probe, load_net
from embedkit.inspect.receptive import receptive_field, sequential_field
from embedkit.models.preprocessing import Preprocessing

# ---------------------------------------------------------------- receptive fields


@pytest.fixture(scope="module")
def vgg16():
    """torchvision's VGG16, random weights: built on the meta device (no 138M-parameter init), then given memory."""
    import torchvision

    with torch.device("meta"):
        model = torchvision.models.vgg16(weights=None)
    return model.to_empty(device="cpu").eval()


@pytest.mark.parametrize("node,size,stride,padding", [
    ("features.2", 5, 1, 2),     # conv1_2
    ("features.7", 14, 2, 6),    # conv2_2
    ("features.14", 40, 4, 18),  # conv3_3
])
def test_vgg16_receptive_fields_are_the_standard_ones(vgg16, node, size, stride, padding):
    rf = receptive_field(Probe(vgg16, node), 64)  # VGG's fields do not depend on the input size: a small dummy
    assert rf.size == (size, size) and rf.jump == (stride, stride) and rf.padding == (padding, padding)
    idx = int(node.split(".")[1])
    assert sequential_field(list(vgg16.features[:idx + 1])) == rf  # the module attributes agree with the trace


def test_hand_built_network_field():
    # conv k5 s2 p2: 5, jump 2, start -2 | maxpool k3 s2 p1: 9, jump 4, start -4 | conv k3 dilation 2 p2: 25, start -12
    net = nn.Sequential(nn.Conv2d(3, 4, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                        nn.Conv2d(4, 4, 3, dilation=2, padding=2))
    rf = receptive_field(net, 64)
    assert (rf.size, rf.jump, rf.padding) == ((25, 25), (4, 4), (12, 12))
    assert rf.box(1, 2) == (-12 + 8, -12 + 4, -12 + 8 + 25, -12 + 4 + 25)


class _Residual(nn.Module):
    """x + conv(conv(x)) with a squeeze-excitation gate: the field is the main path's."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        y = self.b(self.a(x))
        gate = torch.sigmoid(y.mean((2, 3), keepdim=True))  # 1x1: broadcast, does not make the field global
        return x + y * gate


def test_branches_take_the_largest_path_and_gates_do_not_globalise():
    rf = receptive_field(_Residual(), 32)
    assert rf.size == (5, 5) and rf.jump == (1, 1) and rf.padding == (2, 2)


def test_tf_same_padding_depends_on_the_input_size():
    from timm.layers import Conv2dSame

    conv = Conv2dSame(3, 4, 3, stride=2)
    assert receptive_field(conv, 224).padding == (0, 0)  # pads 1 pixel in total: on the bottom/right
    assert receptive_field(conv, 225).padding == (1, 1)


def test_non_spatial_and_unknown_layers_are_clear_errors():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ConfigError, match="not a spatial map"):
        receptive_field(Probe(net, "3"), 32)
    with pytest.raises(ConfigError, match="layer 'nope' is not valid"):
        Probe(net, "nope")


def test_first_conv_of_a_non_conv_network_is_a_clear_error():
    with pytest.raises(ConfigError, match="not a convolution"):
        first_conv(nn.Sequential(nn.Flatten(), nn.Linear(12, 4)))
    assert first_conv(nn.Sequential(nn.Conv2d(3, 8, 3)))[0] == "0"


# ---------------------------------------------------------------- top-k and patches

PLUS = [(0, 1), (1, 0), (1, 1), (1, 2), (2, 1)]
CORNERS = [(0, 0), (0, 2), (2, 0), (2, 2)]


def _plus_net() -> nn.Module:
    """Channel 0 answers to a red plus (and not to a red square); channel 1 to brightness."""
    conv = nn.Conv2d(3, 2, 3, padding=1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        for y, x in PLUS:
            conv.weight[0, 0, y, x], conv.weight[0, 1, y, x], conv.weight[0, 2, y, x] = 1.0, -1.0, -1.0
        for y, x in CORNERS:
            conv.weight[0, 0, y, x] = -1.0
        conv.weight[1] = 1.0 / 27
    return nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2)).eval()


def _hand_net() -> LoadedNet:
    pre = Preprocessing(input_size=32, resize=32, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation="nearest")
    return LoadedNet(spec=None, model=_plus_net(), weights="hand", identity="hand-set", preprocessing=pre)


@pytest.fixture
def plus_images(tmp_path):
    """12 noisy images; only pattern.png holds a red plus (centre y=20, x=9); decoy.png a red square."""
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(10):
        Image.fromarray(rng.integers(70, 190, (32, 32, 3), dtype=np.uint8)).save(root / f"noise_{i:02d}.png")
    pattern = np.full((32, 32, 3), 128, np.uint8)
    for y, x in PLUS:
        pattern[19 + y, 8 + x] = (255, 0, 0)
    Image.fromarray(pattern).save(root / "pattern.png")
    decoy = np.full((32, 32, 3), 128, np.uint8)
    decoy[4:7, 4:7] = (255, 0, 0)
    Image.fromarray(decoy).save(root / "decoy.png")
    return root


def test_the_pattern_image_and_location_are_the_top_patch(plus_images, tmp_path):
    run = inspect_patches(plus_images, tmp_path / "out" / "p.html", layer="2", channels="0,1", nets=[_hand_net()],
                          workers=0, batch_size=5, progress=False, cell=16)
    top = run.nets[0].hits[0][0]
    assert top.path.endswith("pattern.png")
    left, t, right, bottom = top.box
    assert left <= 9 < right and t <= 20 < bottom and (right - left, bottom - t) == (4, 4)
    assert (top.patch == (255, 0, 0)).all(axis=-1).sum() >= 3  # the patch shows the plus
    assert len(run.nets[0].hits[0]) == 9 and run.images == 12
    assert all(p.is_file() for p in run.outputs)


def test_a_code_store_is_a_source(plus_images, tmp_path):
    from embedkit.store.codestore import CodeStore

    paths = sorted(str(p) for p in plus_images.iterdir())[:5]
    CodeStore.from_arrays(tmp_path / "store", np.zeros((5, 4), np.float32), paths)
    run = inspect_patches(tmp_path / "store", tmp_path / "s.html", layer="2", channels="1", nets=[_hand_net()],
                          workers=0, progress=False, cell=16)
    assert run.images == 5 and {h.path for h in run.nets[0].hits[0]} == set(paths)


def test_topk_memory_is_bounded_and_keeps_the_best():
    top = TopK(channels=3, k=9)
    rng = np.random.default_rng(1)
    best = []
    for b in range(50):
        act = torch.from_numpy(rng.normal(size=(7, 3, 4, 5)).astype(np.float32))
        top.update(act, range(b * 7, b * 7 + 7))
        best.append(act.flatten(2).max(2).values[:, 1].numpy())
        assert top.values.shape == (3, 9)
    expect = np.sort(np.concatenate(best))[::-1][:9]
    assert np.allclose([h[0] for h in top.hits(1)], expect)


def test_default_channels_are_the_highest_mean_and_bad_specs_fail():
    top = TopK(channels=4, k=2)
    top.update(torch.tensor([[1.0, 5.0, 3.0, 0.0]]).view(1, 4, 1, 1).repeat(2, 1, 2, 2), [0, 1])
    from embedkit.inspect.patches import choose_channels

    assert choose_channels(top, "2") == [1, 2] and choose_channels(top, "all") == [0, 1, 2, 3]
    assert parse_channels("3,", 4) == (None, [3])
    for bad in ("9", "x", "0,7", "-1"):
        if bad == "9":
            assert parse_channels(bad, 4) == (4, None)  # a count larger than the layer: all of them
            continue
        with pytest.raises(ConfigError, match="channels"):
            parse_channels(bad, 4)


def test_html_is_self_contained_and_escapes_file_names(plus_images, tmp_path):
    evil = "<img src=x onerror=alert(1)>.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(plus_images / evil)
    (plus_images / "broken.png").write_bytes(b"not an image")
    run = inspect_patches(plus_images, tmp_path / "p.html", layer="2", channels="all", nets=[_hand_net()],
                          workers=0, progress=False, cell=16)
    text = run.outputs[1].read_text(encoding="utf-8")
    assert "<img src=x" not in text and "onerror=alert(1)>" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in text
    tags = _tags(text)
    srcs = [v for _t, attrs in tags for k, v in attrs if k == "src"]
    assert len(srcs) >= 9 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not [k for _t, attrs in tags for k, _v in attrs if k in ("href", "action", "srcset", "onerror")]
    assert not {t for t, _a in tags} & {"script", "link", "iframe", "object", "embed"} and "url(" not in text
    assert [p for p, _ in run.skipped] == [str(plus_images / "broken.png")] and "broken.png" in text


def _tags(text: str) -> list:
    """(tag, attrs) of every start tag, as a browser's parser sees them."""
    from html.parser import HTMLParser

    found = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, attrs))

    P().feed(text)
    return found


# ---------------------------------------------------------------- CLI


def test_cli_filters_and_errors(tmp_path):
    from embedkit.cli.main import app

    runner = CliRunner()
    out = tmp_path / "f.png"
    res = runner.invoke(app, ["inspect", "filters", "--backbone", "torchvision:resnet18", "--weights", "none",
                              "--compare-weights", "none", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and "64 filters of conv1" in res.output
    from PIL import Image

    w, h = Image.open(out).size
    assert w >= 2 * 480 and h >= 480  # two grids of 8 x 8 filters, each drawn at least 480 px wide
    res = runner.invoke(app, ["inspect", "filters", "--backbone", "torchvision:resnet18", "--weights", "none",
                              "--layer", "layer9.conv", "-o", str(out)])
    assert res.exit_code == 2 and "error: layer 'layer9.conv' is not valid" in res.output
    res = runner.invoke(app, ["inspect", "filters", "--backbone", "torchvision:resnet18", "--weights", "none",
                              "--layer", "layer1.0.bn1", "-o", str(out)])
    assert res.exit_code == 2 and "not a Conv2d" in res.output


def test_cli_patches_on_a_small_folder(plus_images, tmp_path):
    from embedkit.cli.main import app

    out = tmp_path / "p.html"
    res = CliRunner().invoke(app, ["inspect", "patches", str(plus_images), "--backbone", "torchvision:resnet18",
                                   "--weights", "none", "--layer", "layer1", "--channels", "4", "--workers", "0",
                                   "--device", "cpu", "-q", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "inspected 12 images (0 skipped) at layer layer1 (receptive field 43 px, stride 4" in res.output
    assert out.is_file() and out.with_suffix(".png").is_file()


def test_load_net_preprocesses_like_the_backbone_of_the_same_weights():
    from embedkit.models.backbone import Backbone

    net = load_net("efficientnet_lite0")
    assert net.preprocessing == Backbone("efficientnet_lite0", device="cpu").preprocessing
    assert net.preprocessing.mean == (0.5, 0.5, 0.5)  # lite0's [-1, 1] scaling, not ImageNet's mean/std
