"""embedkit: neural codes from pretrained CNNs, and what to do with them.

Fine-tune a backbone for a new image domain, extract codes into memory-mapped
stores, classify them with SVMs, retrieve neighbours with FAISS and look at the
embedding with t-SNE/UMAP. See README.md for the command line.
"""

__version__ = "0.1.0"

from .backbones import BackboneSpec, Preprocessing, get_spec, list_backbones, register_backbone  # noqa: E402
from .errors import (  # noqa: E402
    ConfigError, DataError, EmbedkitError, MismatchError, MissingDependencyError, NotFittedError, StoreError,
    WeightsError,
)
from .extract import Backbone  # noqa: E402
from .store import CodeStore, EmbedResult, embed  # noqa: E402

# Heavier stages are imported on first use, so `import embedkit` stays quick.
# (finetune() and view() live in the modules of the same name: embedkit.finetune.finetune, embedkit.view.view.)
_LAZY = {
    "SVMClassifier": "classify", "LogisticBaseline": "classify", "grid_search_svm": "gridsearch",
    "KNNIndex": "retrieve", "KNNClassifier": "knn_classify", "project": "view",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'embedkit' has no attribute {name!r}")


__all__ = [*_LAZY, 
    "__version__", "Backbone", "BackboneSpec", "CodeStore", "EmbedResult", "Preprocessing", "embed", "get_spec",
    "list_backbones", "register_backbone", "EmbedkitError", "ConfigError", "DataError", "MismatchError",
    "MissingDependencyError", "NotFittedError", "StoreError", "WeightsError",
]
