"""Training: the loop and what it is made of (loss, update step, validation, run directory, progress, schedule, DDP)."""

from .loop import TrainResult, train

__all__ = ["TrainResult", "train"]
