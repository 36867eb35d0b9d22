"""LS — assume negative with label smoothing (Cole et al., "Multi-Label Learning from Single Positive Labels",
CVPR 2021; COLE `loss_an_ls`).

With p = sigmoid(x), y = [observed == 1], nl(u) = -ln(u + 1e-5) and epsilon = ls_coef (default 0.1):

    y = 1: (1 - eps) nl(p) + eps nl(1 - p)
    y = 0: (1 - eps) nl(1 - p) + eps nl(p)

averaged over the B x C entries. Smoothing applies to observed positives and assumed negatives alike.
"""

import torch

from bench import Hyperparam, Method
from bench.losses import neg_log


class LabelSmoothing(Method):
    name = "ls"
    summary = "AN with label smoothing on observed positives and assumed negatives (Cole et al.)"
    hparams = {"ls_coef": Hyperparam(0.1, "smoothing epsilon", low=0, high=0.5, high_open=True,
                                     search=(0.01, 0.4), log=True)}

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        probs = torch.sigmoid(logits)
        eps = self.hp["ls_coef"]
        positive = (observed == 1).to(probs.dtype)
        as_positive = (1 - eps) * neg_log(probs) + eps * neg_log(1 - probs)
        as_negative = (1 - eps) * neg_log(1 - probs) + eps * neg_log(probs)
        return (positive * as_positive + (1 - positive) * as_negative).mean()
