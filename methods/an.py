"""AN and WAN — assume negative and weak assume negative (Cole et al., "Multi-Label Learning from Single Positive
Labels", CVPR 2021; COLE `loss_an`, `loss_wan`).

With p = sigmoid(x), y = [observed == 1] and nl(u) = -ln(u + 1e-5), the clamped log of the reference code:

    AN:  l = y nl(p) + (1 - y) nl(1 - p)
    WAN: l = y nl(p) + gamma (1 - y) nl(1 - p),  gamma = 1 / (C - 1)

averaged over the B x C entries. The δ caps each entry at ln(1e5) ≈ 11.51; it is kept (rather than an exact logits
BCE, as LL/BG use) so that AN reproduces the COLE/ZHOU rows of the published tables. (COLE, ZHOU, LL and BG name the
four reference repositories: see docs/methods.md.)
"""

import torch

from bench import Method
from bench.losses import assume_negative_loss, neg_log


class AssumeNegative(Method):
    name = "an"
    summary = "assume negative: unobserved labels are trained as negatives (BCE with the reference's clamped log)"

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        return assume_negative_loss(logits, observed)


class WeakAssumeNegative(Method):
    name = "wan"
    summary = "weak assume negative: assumed negatives down-weighted by 1/(C-1) (Cole et al.)"

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        probs = torch.sigmoid(logits)
        positive = (observed == 1).to(probs.dtype)
        weight = 1.0 / (logits.shape[1] - 1)
        return (positive * neg_log(probs) + weight * (1 - positive) * neg_log(1 - probs)).mean()
