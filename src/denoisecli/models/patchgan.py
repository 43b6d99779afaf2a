"""A spectrally normalised patch discriminator: one real/fake score per overlapping patch."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from denoisecli.models.config import from_config

DEFAULTS: dict[str, Any] = {"channels": 3, "width": 64, "layers": 3}


class PatchDiscriminator(nn.Module):
    """Strided convolutions down to a map of scores, each seeing a ~30-pixel patch.

    Spectral normalisation bounds the discriminator's Lipschitz constant, which keeps
    its gradients to the generator well scaled and the adversarial game stable.
    """

    def __init__(self, channels: int = 3, width: int = 64, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        ch_in, ch = channels, width
        for i in range(layers):
            mods += [spectral_norm(nn.Conv2d(ch_in, ch, 4, stride=2 if i < layers - 1 else 1, padding=1)), nn.LeakyReLU(0.2, inplace=True)]
            ch_in, ch = ch, min(ch * 2, width * 8)
        mods.append(spectral_norm(nn.Conv2d(ch_in, 1, 4, padding=1)))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)


def build(config: dict[str, Any]) -> PatchDiscriminator:
    return from_config(PatchDiscriminator, DEFAULTS, config, "patchgan")
