"""Loss building blocks shared by several method plugins (the notation of `docs/methods.md`)."""

from __future__ import annotations

import torch

LOG_EPSILON = 1e-5
"""δ of the reference code: nl(u) = -ln(u + δ)."""


def neg_log(u: torch.Tensor) -> torch.Tensor:
    """nl(u) = -ln(u + 1e-5), the clamped log of the reference code (COLE `LOG_EPSILON`)."""
    return -torch.log(u + LOG_EPSILON)


def assume_negative_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """COLE's AN loss: mean over B x C of y nl(p) + (1 - y) nl(1 - p), with y = [targets == 1], p = sigmoid(x)."""
    probs = torch.sigmoid(logits)
    positive = (targets == 1).to(probs.dtype)
    return (positive * neg_log(probs) + (1 - positive) * neg_log(1 - probs)).mean()
