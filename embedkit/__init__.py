"""embedkit: neural codes from pretrained CNNs, and what to do with them.

Fine-tune a backbone for a new image domain, extract codes into memory-mapped
stores, classify them with SVMs, retrieve neighbours with FAISS and look at the
embedding with t-SNE/UMAP. See README.md for the command line and the layout.

Everything here is imported on first use, so ``import embedkit`` (and
``embedkit --help``) does not import torch.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from embedkit.errors import (  # noqa: E402  (errors are light and always wanted)
    ConfigError,
    DataError,
    EmbedkitError,
    MismatchError,
    MissingDependencyError,
    NotFittedError,
    StoreError,
    WeightsError,
)

# public name -> module that owns it
_LAZY = {
    "Backbone": "embedkit.models.backbone",
    "BackboneSpec": "embedkit.models.registry",
    "Preprocessing": "embedkit.models.preprocessing",
    "get_spec": "embedkit.models.registry",
    "list_backbones": "embedkit.models.registry",
    "register_backbone": "embedkit.models.registry",
    "CodeStore": "embedkit.store.codestore",
    "EmbedResult": "embedkit.runner.embed",
    "embed": "embedkit.runner.embed",
    "SVMClassifier": "embedkit.classify.svm",
    "LogisticBaseline": "embedkit.classify.svm",
    "grid_search_svm": "embedkit.classify.gridsearch",
    "KNNIndex": "embedkit.retrieve.index",
    "KNNClassifier": "embedkit.retrieve.knn_classifier",
    "neighbors": "embedkit.retrieve.search",
    "dedupe": "embedkit.retrieve.search",
    "project": "embedkit.view.project",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # cache: later lookups skip __getattr__
        return value
    raise AttributeError(f"module 'embedkit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "__version__", *_LAZY, "EmbedkitError", "ConfigError", "DataError", "MismatchError", "MissingDependencyError",
    "NotFittedError", "StoreError", "WeightsError",
]
