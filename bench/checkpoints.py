"""Checkpoint files: the epoch checkpoint a run resumes from, and the best epoch's weights kept for the figures.

Both are written atomically (`bench.records.atomic_write`) and read with `torch.load(..., weights_only=True)`, so a
checkpoint can hold tensors, numbers, strings and containers of them, never an arbitrary pickled object.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from bench.errors import UserError
from bench.records import atomic_write


def resume_file(folder: Path, key: str) -> Path:
    """The epoch checkpoint of the run `key` in `folder`: what an interrupted run resumes from."""
    return folder / f"{key}.partial.pt"


def best_file(folder: Path, key: str) -> Path:
    """The best epoch's weights of the finished run `key` in `folder`, kept for the figures."""
    return folder / f"{key}.pt"


def save(state: dict[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, buffer.getvalue())


def load(path: Path) -> dict[str, Any]:
    """torch.load with weights_only=True; UserError naming an unreadable file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is the user's to remove
        raise UserError(f"cannot read checkpoint {path} ({type(error).__name__}); delete it to start afresh") from None


def load_model_weights(path: Path) -> dict[str, torch.Tensor]:
    """The model state dict of a best-epoch checkpoint; UserError when it is missing."""
    if not path.exists():
        raise UserError(f"checkpoint {path} is missing: it is written where its cell is trained")
    return load(path)["model"]
