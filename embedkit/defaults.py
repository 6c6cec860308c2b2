"""Defaults shared by the library and the CLI, defined once.

The CLI takes its defaults and choices from here, so the two never disagree.
"""

from __future__ import annotations

#: the backbone used when none is named: real ImageNet weights that install as a package (work offline)
BACKBONE = "efficientnet_lite0"
#: the registered backbones (embedkit.models.zoo), known here without importing torch so that the CLI can check
#: a name before the seconds of imports (tests/test_cli_errors.py checks it against the registry)
BUILTIN_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50", "vgg16", "vgg19")
#: train / validation / test fractions (the paper's 64/16/20)
SPLIT_FRACTIONS = (0.64, 0.16, 0.20)
#: folds of the SVM grid search (the paper's 3-fold cross-validation)
CV_FOLDS = 3
#: SVM kernels searched by default (the paper's two)
SVM_KERNELS = ("rbf", "sigmoid")
#: C values searched by default
SVM_CS = (0.1, 1.0, 10.0, 100.0)
#: the paper's gamma (RBF C=1, sigmoid C=10, both gamma=1e-4 on VGG19 fc7)
PAPER_GAMMA = 1e-4
#: gamma values searched by default: multiples of scikit-learn's "scale" (1 / (D * var)) and the paper's value
SVM_GAMMAS = ("0.1*scale", "scale", "10*scale", PAPER_GAMMA)
#: top-k reported next to top-1
TOP_K = 5
#: rows read at a time when streaming codes from a store (bounded memory)
CHUNK_ROWS = 65536
#: images per loader batch by device type: GPUs want large batches, CPUs gain nothing past a few dozen
BATCH_SIZE = {"cuda": 128, "cpu": 32}


# Choices of the embed job, owned here so the library's checks and the CLI's options are the same list.
#: compute precision of the forward pass (auto = bf16/fp16 autocast on CUDA, fp32 on CPU)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: how a spatial (B, C, H, W) or token (B, T, C) layer becomes a vector
SPATIAL_REDUCTIONS = ("avg", "max", "cls", "flatten")
#: where JPEGs are decoded: PIL in the loader workers, or torchvision.io on the compute device
DECODES = ("cpu", "device")
#: the engines that run an embed job
ENGINES = ("local", "ray")
