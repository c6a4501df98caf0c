from pathlib import Path

import torch
from torchvision.transforms import v2


class MarkedNoise:
    """Any callable on an image is an augmentation: to tensor, normalise, add Gaussian noise."""

    def __init__(self, std: float, marker: str) -> None:
        self.std = std
        self.marker = Path(marker)
        self.to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])

    def __call__(self, image):
        if not self.marker.exists():
            self.marker.touch()
        x = self.to_tensor(image)
        return (x - 0.3) / 0.4 + self.std * torch.randn_like(x)
