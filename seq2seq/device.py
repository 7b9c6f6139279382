"""Choosing the device and the mixed-precision dtype."""

from __future__ import annotations

import torch

from .errors import ConfigError


def resolve_device(spec: str) -> torch.device:
    """``auto`` is the first CUDA GPU when there is one, else the CPU; ``cuda[:N]`` must exist."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {spec!r} asked for, but torch sees no CUDA GPU; use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {spec!r} asked for, but only {torch.cuda.device_count()} GPU(s) are visible")
    return device
