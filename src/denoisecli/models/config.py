"""Building a network from its config dict, strictly: a typo in a config never builds the wrong model."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

T = TypeVar("T")


def from_config(factory: Callable[..., T], defaults: dict[str, Any], config: dict[str, Any], arch: str) -> T:
    """Defaults overlaid with ``config`` (less its ``arch`` key); unknown keys are refused."""
    params = {**defaults, **{k: v for k, v in config.items() if k != "arch"}}
    unknown = set(params) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {arch} option(s): {', '.join(sorted(unknown))}")
    return factory(**params)
