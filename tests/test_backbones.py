"""Registry, preprocessing, code layers and weights loading."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image

import embedkit
from embedkit import Backbone, ConfigError, MismatchError, WeightsError, get_spec, list_backbones
from embedkit.models.registry import BackboneSpec, register_backbone
from embedkit.models.preprocessing import Preprocessing


def test_registry_lists_the_required_backbones():
    assert {"vgg16", "vgg19", "resnet50", "efficientnet_lite0"} <= set(list_backbones())
    assert get_spec("vgg19").default_layer == "fc7"
    assert get_spec("efficientnet_lite0").source == "timm"


def test_unknown_backbone_names_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        get_spec("no_such_net_v9")
    assert "vgg19" in str(e.value) and "timm" in str(e.value)


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ConfigError):
        register_backbone(BackboneSpec(name="vgg19", source="torchvision", arch="vgg19", preprocessing=Preprocessing()))


def test_any_timm_or_torchvision_model_resolves_with_its_own_preprocessing():
    t = get_spec("timm:resnet18")
    assert t.source == "timm" and t.preprocessing.input_size == 224
    v = get_spec("torchvision:mobilenet_v3_small")
    assert v.source == "torchvision" and v.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))
    bb = Backbone("timm:resnet18", weights="none", device="cpu")
    assert bb.dim == 512  # penultimate layer = pooled features feeding the classifier


@pytest.mark.slow
@pytest.mark.parametrize("layer,dim", [("fc7", 4096), ("fc6", 4096), ("pool5", 512)])
def test_vgg19_code_layers(layer, dim):
    bb = Backbone("vgg19", layer=layer, weights="none", device="cpu")
    x = torch.randn(2, 3, 224, 224)
    codes = bb.forward(x)
    assert codes.shape == (2, dim)
    if layer in ("fc7", "fc6"):
        assert (codes >= 0).all()  # taken after the ReLU


@pytest.mark.slow
def test_fc7_equals_the_second_fully_connected_layer_after_relu():
    bb = Backbone("vgg16", layer="fc7", weights="none", device="cpu")
    model = get_spec("vgg16").create_model()
    model.load_state_dict({k.replace("body.", ""): v for k, v in bb.model.state_dict().items()}, strict=False)
    model.eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        h = torch.flatten(model.avgpool(model.features(x)), 1)
        manual = model.classifier[4](model.classifier[3](model.classifier[1](model.classifier[0](h))))
    assert torch.allclose(bb.forward(x), manual, atol=1e-5)


def test_any_named_node_can_be_the_code_and_bad_nodes_are_explained():
    bb = Backbone("efficientnet_lite0", layer="blocks.4", device="cpu")
    assert bb.dim == 112
    with pytest.raises(ConfigError) as e:
        Backbone("efficientnet_lite0", layer="blocks.99", device="cpu")
    assert "blocks" in str(e.value)


def test_preprocessing_of_each_kind():
    white = Image.new("RGB", (300, 200), (255, 255, 255))
    lite = get_spec("efficientnet_lite0").preprocessing.transform()(white)
    assert lite.shape == (3, 224, 224) and torch.allclose(lite, torch.ones_like(lite))  # [-1, 1] scaling
    black = get_spec("efficientnet_lite0").preprocessing.transform()(Image.new("RGB", (64, 64)))
    assert torch.allclose(black, -torch.ones_like(black))
    vgg = get_spec("vgg19").preprocessing.transform()(white)
    expect = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(vgg[:, 100, 100], expect, atol=1e-5)
    pre = get_spec("timm:vit_small_patch16_384").preprocessing
    assert pre.input_size == 384 and pre.to_dict() == Preprocessing.from_dict(pre.to_dict()).to_dict()


def test_default_weights_are_real_imagenet_weights():
    """The packaged EfficientNet-Lite0 weights classify scikit-learn's china.jpg as a palace."""
    from sklearn.datasets import load_sample_image
    from torchvision.models import ResNet50_Weights

    categories = ResNet50_Weights.DEFAULT.meta["categories"]
    bb = Backbone("efficientnet_lite0", layer="logits", device="cpu")
    assert bb.weights_info.kind == "package" and len(bb.weights_info.sha256) == 64
    logits = bb.embed_images([Image.fromarray(load_sample_image("china.jpg"))])[0]
    assert categories[int(np.argmax(logits))] == "palace"
    logits = bb.embed_images([Image.fromarray(load_sample_image("flower.jpg"))])[0]
    assert categories[int(np.argmax(logits))] == "daisy"


@pytest.mark.parametrize("name,size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_packaged_backbones_have_real_imagenet_weights(name, size):
    """Lite1 and Lite2 load offline from their packages, at their own input size, and know a palace."""
    from sklearn.datasets import load_sample_image
    from torchvision.models import ResNet50_Weights

    categories = ResNet50_Weights.DEFAULT.meta["categories"]
    bb = Backbone(name, layer="logits", device="cpu")
    assert bb.weights_info.kind == "package" and bb.preprocessing.input_size == size
    logits = bb.embed_images([Image.fromarray(load_sample_image("china.jpg"))])[0]
    assert categories[int(np.argmax(logits))] == "palace"
    assert Backbone(name, device="cpu").dim == 1280


def test_offline_without_cached_weights_is_a_clear_error(monkeypatch, tmp_path):
    import socket

    import embedkit.models.weights

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # nothing cached

    def no_network(*a, **k):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)  # what embedkit's reachability check opens
    with pytest.raises(WeightsError, match="offline") as e:
        Backbone("resnet50", device="cpu")
    msg = str(e.value)
    assert "resnet50-" in msg and "--weights" in msg and str(tmp_path) in msg
    # reachable, but the download breaks off: the same advice with the library's reason, and no file left
    monkeypatch.setattr(embedkit.models.weights, "reachable", lambda url, timeout=3.0: True)

    def reset(url, dst, *a, **k):
        raise urllib.error.URLError("connection reset by peer")

    monkeypatch.setattr(torch.hub, "download_url_to_file", reset)
    with pytest.raises(WeightsError, match="could not download .*connection reset by peer") as e:
        Backbone("resnet50", device="cpu")
    assert str(tmp_path) in str(e.value) and not list(tmp_path.rglob("*.pth"))


def test_local_state_dict_and_bad_files(tmp_path):
    model = get_spec("timm:resnet18").create_model()
    torch.nn.init.constant_(model.fc.bias, 0.25)
    torch.save(model.state_dict(), tmp_path / "r18.pth")
    bb = Backbone("timm:resnet18", layer="logits", weights=tmp_path / "r18.pth", device="cpu")
    assert bb.weights_info.kind == "file" and bb.identity()["weights"]["path"].endswith("r18.pth")
    assert torch.equal(bb.model.body.fc.bias, model.fc.bias)
    with pytest.raises(WeightsError, match="does not exist"):
        Backbone("timm:resnet18", weights=tmp_path / "missing.pth", device="cpu")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="could not read"):
        Backbone("timm:resnet18", weights=tmp_path / "junk.pth", device="cpu")
    with pytest.raises(WeightsError, match="does not fit"):
        Backbone("efficientnet_lite0", weights=tmp_path / "r18.pth", device="cpu")


def test_checkpoint_of_another_backbone_is_refused(tmp_path):
    from embedkit.models.checkpoint import CHECKPOINT_FORMAT

    torch.save({"format": CHECKPOINT_FORMAT, "backbone": "vgg19", "num_classes": 3, "state_dict": {}}, tmp_path / "c.pt")
    with pytest.raises(MismatchError, match="--backbone vgg19"):
        Backbone("efficientnet_lite0", weights=tmp_path / "c.pt", device="cpu")


def test_bad_device_and_precision_are_config_errors():
    with pytest.raises(ConfigError, match="no CUDA"):
        Backbone("efficientnet_lite0", device="cuda")
    with pytest.raises(ConfigError, match="use one of"):
        Backbone("efficientnet_lite0", device="tpu")
    with pytest.raises(ConfigError, match="precision"):
        Backbone("efficientnet_lite0", precision="fp8")
    assert isinstance(embedkit.errors.ConfigError("x"), ValueError)


def test_device_resolver_decides_precision_and_backends_in_one_place():
    from embedkit.device import autocast_dtype, resolve_backend, resolve_device

    cpu = resolve_device("auto")  # EMBEDKIT_FORCE_CPU=1 in the suite
    assert cpu.type == "cpu"
    assert autocast_dtype(cpu) is None and autocast_dtype(cpu, "fp16") == torch.float16
    assert resolve_backend(None, gpu="cuml", cpu="sklearn", purpose="SVM") == "sklearn"
    with pytest.raises(embedkit.MissingDependencyError, match=r"embedkit\[gpu\]"):
        resolve_backend("cuml", gpu="cuml", cpu="sklearn", purpose="SVM")
    with pytest.raises(ConfigError, match="use one of auto, "):
        resolve_backend("magic", gpu="cuml", cpu="sklearn", purpose="SVM")
