"""DnCNN (Zhang et al., 2017): a plain stack of conv-BN-ReLU predicting the noise; a speed reference."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from denoisecli.models.config import from_config

DEFAULTS: dict[str, Any] = {"channels": 3, "layers": 17, "width": 64}


class DnCNN(nn.Module):
    """``layers`` 3x3 convolutions at full resolution; DnCNN-17 is the published size."""

    def __init__(self, channels: int = 3, layers: int = 17, width: int = 64) -> None:
        super().__init__()
        self.channels, self.stride = channels, 1
        mods: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(layers - 2):
            mods += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        mods.append(nn.Conv2d(width, channels, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.net(x)


def build(config: dict[str, Any]) -> DnCNN:
    return from_config(DnCNN, DEFAULTS, config, "dncnn")
