"""Choosing the device and the mixed-precision dtype."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from .errors import ConfigError

logger = logging.getLogger(__name__)


def to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device`` without making the host wait: a CPU tensor goes through pinned memory to CUDA."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return (tensor if tensor.is_pinned() else tensor.pin_memory()).to(device, non_blocking=True)


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


@dataclass(frozen=True)
class AmpSettings:
    """How the forward pass runs: autocast ``dtype`` (None = fp32) and whether a gradient scaler guards fp16."""

    dtype: torch.dtype | None
    use_scaler: bool

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def precision(self) -> str:
        """fp32, bf16 or fp16: the name the configs and the benchmark tables use."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]


def resolve_amp(amp: str, device: torch.device, key: str = "train.amp") -> AmpSettings:
    """Map ``train.amp`` (auto | off | bf16 | fp16) to settings for ``device``; impossible choices raise ConfigError
    naming ``key``.

    Master weights stay fp32 in every mode: autocast only lowers the precision of matrix products.
    """
    if amp == "off":
        return AmpSettings(dtype=None, use_scaler=False)
    if amp == "auto":
        amp = _auto_amp(device)
        if amp == "off":
            return AmpSettings(dtype=None, use_scaler=False)
    if amp == "bf16":
        if device.type == "cpu" and not cpu_has_bf16_matrix_units():
            # Measured on an AVX2 CPU: a bf16 training step ran 15x slower than fp32 (47 vs 692 tokens/s).
            logger.warning("%s=bf16 on a CPU without bf16 matrix units (AMX): bf16 is emulated there and runs many "
                           "times slower than fp32; use %s=auto or off", key, key)
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ConfigError(f"{key}=bf16 asked for, but {torch.cuda.get_device_name(device)} has no bf16 "
                              f"support; use {key}=fp16 or auto")
        return AmpSettings(dtype=torch.bfloat16, use_scaler=False)
    if amp == "fp16":
        if device.type != "cuda":
            raise ConfigError(f"{key}=fp16 needs a CUDA GPU; on the CPU use {key}=bf16 or off")
        return AmpSettings(dtype=torch.float16, use_scaler=True)
    raise ConfigError(f"{key} must be auto, off, bf16 or fp16 (got {amp!r})")


def resolve_decode_amp(amp: str, device: torch.device, beam_size: int) -> AmpSettings:
    """Map ``decode.amp`` to autocast settings for a search with ``beam_size`` on ``device``.

    ``auto`` follows ``train.amp: auto`` (the precision the models were trained in), except
    that greedy search on the CPU stays fp32: measured on an AMX CPU with batches of 64
    sentences, bf16 made beam 5 1.14-1.31x faster, but greedy 0.94x as fast: its matrices
    (one row per sentence) are too small to repay the casts. Test BLEU moved by less than 0.1 either way
    (BENCHMARKS.md). The gradient scaler never applies: nothing is trained.
    """
    if amp == "auto" and device.type == "cpu" and beam_size == 1:
        amp = "off"
    return replace(resolve_amp(amp, device, key="decode.amp"), use_scaler=False)


def _auto_amp(device: torch.device) -> str:
    """The one place that decides what ``train.amp: auto`` means on each kind of device.

    CUDA: bf16 where the GPU supports it (no scaler needed: bf16 has fp32's exponent range),
    else fp16 with a scaler. CPU: bf16 where the CPU has bf16 matrix units (AMX), where it
    trains faster and Multi30k dev BLEU stayed within 0.5 of fp32 at every epoch compared
    (BENCHMARKS.md); fp32 elsewhere, where bf16 arithmetic is emulated and slower.
    """
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16_matrix_units() else "off"


def cpu_has_bf16_matrix_units(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU advertises AMX bf16 tiles (Linux flags ``amx_bf16``); False where that cannot be read."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        return False
    return False
