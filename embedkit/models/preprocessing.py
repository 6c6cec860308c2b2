"""How an image becomes a network input: size, resize, mean/std, interpolation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB PIL image becomes the network's input tensor.

    ``resize`` is the shorter side before a centre crop of ``input_size``
    (timm's ``crop_pct`` = input_size / resize). ``mean``/``std`` of 0.5 is the
    [-1, 1] scaling used by TensorFlow-trained models.
    """

    input_size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"
    # EXIF orientation is applied when decoding (embedkit.io.decode): codes are of the image as displayed.
    # Recorded so that codes made before (of the raw pixels) do not pass for comparable ones.
    exif_transpose: bool = True

    def transform(self) -> Callable:
        """Evaluation transform: resize, centre crop, to tensor, normalise."""
        from torchvision import transforms as T

        interp = T.InterpolationMode(self.interpolation)
        return T.Compose([
            T.Resize(self.resize, interpolation=interp),
            T.CenterCrop(self.input_size),
            T.ToTensor(),
            T.Normalize(self.mean, self.std),
        ])

    def transform_uint8(self) -> Callable:
        """Resize and centre crop only, to a uint8 tensor; normalise later with :meth:`normalize_batch`.

        Used by the extraction loaders: a uint8 image is a quarter of the bytes to pass between
        processes and to the GPU, and normalising a whole batch at once (on the device) is far
        cheaper than per-image float ops in the workers.
        """
        from torchvision import transforms as T

        interp = T.InterpolationMode(self.interpolation)
        return T.Compose([T.Resize(self.resize, interpolation=interp), T.CenterCrop(self.input_size), T.PILToTensor()])

    def normalize_batch(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) batch -> float normalised batch, on ``x``'s device: (x/255 - mean) / std."""
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return x.float().mul_(1.0 / (255.0 * std)).sub_(mean / std)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(input_size=int(d["input_size"]), resize=int(d["resize"]), mean=tuple(d["mean"]),
                   std=tuple(d["std"]), interpolation=str(d.get("interpolation", "bilinear")),
                   exif_transpose=bool(d.get("exif_transpose", True)))


IMAGENET = Preprocessing()

