"""FFDNet-style network (Zhang et al., 2018): pixel-unshuffle, a noise-level map, a plain conv stack; a speed reference."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from denoisecli.models.config import from_config

DEFAULTS: dict[str, Any] = {"channels": 3, "layers": None, "width": None}


class FFDNet(nn.Module):
    """Works at half resolution on the 4 sub-images plus a noise-level map.

    Published sizes: grey 15 layers of 64 channels, colour 12 layers of 96 channels.
    Without a given level the map is 25/255 (the network is a speed reference here).
    """

    def __init__(self, channels: int = 3, layers: int | None = None, width: int | None = None) -> None:
        super().__init__()
        layers = layers or (12 if channels == 3 else 15)
        width = width or (96 if channels == 3 else 64)
        self.channels, self.stride = channels, 2
        mods: list[nn.Module] = [nn.Conv2d(4 * channels + 1, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(layers - 2):
            mods += [nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        mods.append(nn.Conv2d(width, 4 * channels, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor, sigma: float = 25 / 255) -> torch.Tensor:
        h, w = x.shape[-2:]
        y = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
        y = F.pixel_unshuffle(y, 2)
        level = torch.full_like(y[:, :1], sigma)
        y = F.pixel_shuffle(self.net(torch.cat([y, level], 1)), 2)
        return y[..., :h, :w]


def build(config: dict[str, Any]) -> FFDNet:
    return from_config(FFDNet, DEFAULTS, config, "ffdnet")
