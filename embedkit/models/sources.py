"""The libraries backbones come from (timm, torchvision), each as one registered :class:`Source`.

A source knows, for a model name inside its library: whether it exists, how to build it, its
preprocessing, its graph nodes and how to cut the graph at one of them, which module is its classifier
head, and where its ImageNet weights come from and how to load a local copy of them. The rest of
embedkit asks ``get_source(spec.source)`` and never branches on the library's name.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from embedkit.errors import ConfigError, WeightsError
from embedkit.models.preprocessing import IMAGENET, Preprocessing


def hub_checkpoints_dir() -> Path:
    """torch's hub checkpoint folder (``$TORCH_HOME/hub/checkpoints``): where downloaded weights are cached."""
    return Path(torch.hub.get_dir()) / "checkpoints"


class Source:
    """A model library. Subclasses implement every method; :func:`register_source` makes one known by name."""

    name = ""
    host = ""  # where its weights are downloaded from (checked once before a download)

    def exists(self, arch: str) -> bool:
        raise NotImplementedError

    def create(self, arch: str, num_classes: int | None = None) -> nn.Module:
        """The network with random weights (``num_classes`` outputs when given)."""
        raise NotImplementedError

    def preprocessing(self, arch: str) -> Preprocessing:
        raise NotImplementedError

    def graph_node_names(self, model: nn.Module) -> list[str]:
        raise NotImplementedError

    def feature_extractor(self, model: nn.Module, node: str) -> nn.Module:
        """The graph cut at ``node``: returns ``{"code": output of node}``."""
        raise NotImplementedError

    def classifier_name(self, model: nn.Module) -> str:
        """Module name of the final classifier (the one owner of "which module is the head")."""
        raise NotImplementedError

    def strip_classifier(self, model: nn.Module) -> nn.Module:
        """``model`` returning what feeds its classifier (the penultimate code)."""
        name = self.classifier_name(model)
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, nn.Identity())
        return model

    def pretrained_file(self, arch: str) -> tuple[str, Path]:
        """``(url, local path)`` of the ImageNet weights: a file placed at the path is used as is, offline."""
        raise NotImplementedError

    def cached_file(self, arch: str) -> str | None:
        """A copy of the weights already in a library cache, or None."""
        _, local = self.pretrained_file(arch)
        return str(local) if local.is_file() else None

    def download(self, arch: str) -> str:
        """Fetch the weights into the cache; returns the file."""
        url, local = self.pretrained_file(arch)
        local.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(local), progress=True)
        return str(local)

    def pretrained_model(self, arch: str, path: str) -> nn.Module:
        """The network with the ImageNet weights in ``path`` (read with weights_only: no code runs)."""
        from embedkit.models.checkpoint import read_checkpoint

        model = self.create(arch)
        try:
            model.load_state_dict(read_checkpoint(path)["state_dict"])
        except RuntimeError as exc:
            raise WeightsError(f"weights file {path!r} does not fit {self.name}:{arch}: {str(exc)[:300]}") from exc
        return model


class TimmSource(Source):
    name = "timm"
    host = "huggingface.co"

    def exists(self, arch):
        import timm

        return arch in timm.list_models()

    def create(self, arch, num_classes=None):
        import timm

        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        return timm.create_model(arch, pretrained=False, **kwargs)

    def _cfg(self, arch):
        import timm

        return timm.get_pretrained_cfg(arch)

    def preprocessing(self, arch):
        cfg = self._cfg(arch)
        cfg = cfg.to_dict() if cfg is not None else {}
        size = int(cfg.get("input_size", (3, 224, 224))[-1])
        return Preprocessing(
            input_size=size,
            resize=int(round(size / float(cfg.get("crop_pct", 0.875)))),
            mean=tuple(cfg.get("mean", IMAGENET.mean)),
            std=tuple(cfg.get("std", IMAGENET.std)),
            interpolation=str(cfg.get("interpolation", "bicubic")),
        )

    def graph_node_names(self, model):
        from timm.models import get_graph_node_names

        return get_graph_node_names(model)[1]

    def feature_extractor(self, model, node):
        from timm.models import create_feature_extractor

        return create_feature_extractor(model, return_nodes={node: "code"})

    def classifier_name(self, model):
        name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
        head = model.get_classifier() if hasattr(model, "get_classifier") else None
        if isinstance(name, str) and _has_module(model, name):
            return name
        for n, m in model.named_modules():  # the module get_classifier() returns
            if head is not None and m is head and n:
                return n
        return _last_linear(model)

    def strip_classifier(self, model):
        if hasattr(model, "reset_classifier"):
            model.reset_classifier(0)  # timm's own: also drops head-only pooling/norm where a model has them
            return model
        return super().strip_classifier(model)

    def _hf(self, arch):
        cfg = self._cfg(arch)
        if cfg is not None and cfg.hf_hub_id and not isinstance(cfg.custom_load, str):
            return cfg.hf_hub_id, cfg.hf_hub_filename or "model.safetensors"
        return None

    def pretrained_file(self, arch):
        cfg = self._cfg(arch)
        hf = self._hf(arch)
        if hf is not None:
            repo, filename = hf
            return (f"https://huggingface.co/{repo}/resolve/main/{filename}",
                    hub_checkpoints_dir() / f"{repo.replace('/', '--')}{Path(filename).suffix}")
        if cfg is not None and cfg.url:
            return cfg.url, hub_checkpoints_dir() / cfg.url.rsplit("/", 1)[-1]
        raise WeightsError(f"timm has no pretrained weights for {arch!r}; use --weights PATH or --weights none")

    def cached_file(self, arch):
        found = super().cached_file(arch)
        if found:
            return found
        cfg, hf = self._cfg(arch), self._hf(arch)
        if cfg is not None and cfg.url and (hub_checkpoints_dir() / cfg.url.rsplit("/", 1)[-1]).is_file():
            return str(hub_checkpoints_dir() / cfg.url.rsplit("/", 1)[-1])  # timm's old cache
        if hf is not None:
            from huggingface_hub import try_to_load_from_cache

            for filename in dict.fromkeys((hf[1], "model.safetensors", "pytorch_model.bin")):
                path = try_to_load_from_cache(hf[0], filename)
                if isinstance(path, str) and os.path.isfile(path):
                    return path
        return None

    def download(self, arch):
        hf = self._hf(arch)
        if hf is None:
            return super().download(arch)
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            return hf_hub_download(hf[0], hf[1])
        except EntryNotFoundError:
            if hf[1] != "model.safetensors":
                raise
            return hf_hub_download(hf[0], "pytorch_model.bin")

    def pretrained_model(self, arch, path):
        import timm

        if str(path).endswith(".npz"):  # original JAX weights: timm's own reader (NumPy, no pickle)
            overlay = {"file": str(path), "custom_load": True}
        else:
            from embedkit.models.checkpoint import read_checkpoint

            overlay = {"state_dict": read_checkpoint(path)["state_dict"]}
        try:  # through timm's builder, so the model's checkpoint filter (key/shape adaptation) applies
            model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise WeightsError(f"weights file {str(path)!r} does not fit timm:{arch}: {str(exc)[:300]}") from exc
        for cfg in {id(c): c for c in (getattr(model, "pretrained_cfg", None), getattr(model, "default_cfg", None))
                    if isinstance(c, dict)}.values():
            cfg.pop("state_dict", None)  # do not keep a second copy of the weights alive
        return model


class TorchvisionSource(Source):
    name = "torchvision"
    host = "download.pytorch.org"

    def exists(self, arch):
        import torchvision

        return arch in torchvision.models.list_models()

    def create(self, arch, num_classes=None):
        import torchvision

        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        return torchvision.models.get_model(arch, weights=None, **kwargs)

    def preprocessing(self, arch):
        import torchvision

        try:
            tf = torchvision.models.get_model_weights(arch).DEFAULT.transforms()
            return Preprocessing(input_size=int(tf.crop_size[0]), resize=int(tf.resize_size[0]), mean=tuple(tf.mean),
                                 std=tuple(tf.std), interpolation=tf.interpolation.value)
        except (ValueError, AttributeError, KeyError):  # models without weights metadata keep ImageNet defaults
            return IMAGENET

    def graph_node_names(self, model):
        from torchvision.models.feature_extraction import get_graph_node_names

        return get_graph_node_names(model)[1]

    def feature_extractor(self, model, node):
        from torchvision.models.feature_extraction import create_feature_extractor

        return create_feature_extractor(model, return_nodes={node: "code"})

    def classifier_name(self, model):
        return _last_linear(model)

    def pretrained_file(self, arch):
        import torchvision

        try:
            url = torchvision.models.get_model_weights(arch).DEFAULT.url
        except (ValueError, AttributeError, KeyError) as exc:
            raise WeightsError(f"torchvision has no pretrained weights for {arch!r}; use --weights PATH or "
                               "--weights none") from exc
        return url, hub_checkpoints_dir() / url.rsplit("/", 1)[-1]


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def _last_linear(model: nn.Module) -> str:
    last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ConfigError("this model has no Linear classifier to strip; pass an explicit --layer node name")
    return last[-1]


_SOURCES: dict[str, Source] = {}


def register_source(source: Source) -> Source:
    """Make ``source`` known by its name (``BackboneSpec.source``)."""
    _SOURCES[source.name] = source
    return source


def get_source(name: str | Source) -> Source:
    """The registered source called ``name`` (a :class:`Source` passes through)."""
    if isinstance(name, Source):
        return name
    if name not in _SOURCES:
        from embedkit.errors import invalid

        raise invalid("backbone source", name, sorted(_SOURCES))
    return _SOURCES[name]


def source_names() -> list[str]:
    """Registered sources, in the order a bare model name is looked up in them."""
    return list(_SOURCES)


register_source(TorchvisionSource())  # bare names: torchvision's first, then timm's
register_source(TimmSource())
