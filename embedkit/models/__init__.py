"""Backbones: registry, built-in zoo, preprocessing, weights, feature extraction.

- ``registry``: :class:`BackboneSpec`, ``register_backbone``, ``get_spec`` (any timm/torchvision name too).
- ``zoo``: the built-in backbones (VGG16/19, ResNet-50, EfficientNet-Lite0 with packaged weights).
- ``preprocessing``: :class:`Preprocessing` (input size, resize, mean/std, interpolation).
- ``weights``: loading packaged, hub, file and checkpoint weights; ``checkpoint``: embedkit's checkpoint format.
- ``features``: a network cut at its code layer (:class:`FeatureModel`), layer names.
- ``identity``: what makes two code sets comparable.
- ``backbone``: :class:`Backbone`, a feature model on a device with fast batched forward passes.
"""
