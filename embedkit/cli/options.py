"""Options shared by several commands, defined once."""

from __future__ import annotations

import click

from embedkit.device import DEVICE_CHOICES


def device_option(f):
    return click.option("--device", type=click.Choice(DEVICE_CHOICES), default="auto", show_default=True,
                        help="Where to run: auto picks CUDA when present.")(f)


def backbone_options(f):
    f = click.option("--weights", default="default", show_default=True,
                     help="'default' (ImageNet), 'none' (random init) or a .pt/.pth file / finetune checkpoint.")(f)
    f = click.option("--layer", default=None, help="Code layer (e.g. fc7, pool5) or any graph node; default: the backbone's.")(f)
    f = click.option("--backbone", default="efficientnet_lite0", show_default=True,
                     help="Registered name (vgg19, resnet50, efficientnet_lite0...) or any timm/torchvision model.")(f)
    return f
