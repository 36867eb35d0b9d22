"""ASL — asymmetric loss (Ridnik et al., "Asymmetric Loss For Multi-Label Classification", ICCV 2021; ASLR
`AsymmetricLoss`), applied to the assume-negative target y = [observed == 1] as in the SPML comparison.

    p = sigmoid(x),  q = min(1 - p + m, 1)             (probability shifting by the margin m = clip)
    L_pos = y ln(max(p, 1e-8)) (1 - p)^gamma_pos
    L_neg = (1 - y) ln(max(q, 1e-8)) (1 - q)^gamma_neg
    L = -sum over b, c of (L_pos + L_neg)              (a SUM over the batch, as the reference; not a mean)

The focusing weight w = (1 - pt)^(gamma_pos y + gamma_neg (1 - y)), pt = p y + q (1 - y), is detached from the
graph, as the reference's default `disable_torch_grad_focal_loss=True`; `focal_grad=true` lets gradients flow
through it (`AsymmetricLossOptimized`'s default) — same value, different gradient. The reference toggles torch's
global grad mode inside `forward` (and so re-enables grad under `no_grad`); this one detaches.
Defaults gamma_neg = 4, gamma_pos = 0, clip = 0.05 (ASLR's COCO training script; the SPML ASL row gives none).
"""

import torch

from bench import Hyperparam, Method

ASL_EPS = 1e-8


class AsymmetricLoss(Method):
    name = "asl"
    summary = "asymmetric loss: focusing on negatives and probability shifting; sum reduction (Ridnik et al.)"
    hparams = {
        "gamma_neg": Hyperparam(4.0, "focusing exponent of negatives", low=0, high=20, search=(0.0, 6.0)),
        "gamma_pos": Hyperparam(0.0, "focusing exponent of positives", low=0, high=20, search=(0.0, 2.0)),
        "clip": Hyperparam(0.05, "probability margin m of negatives", low=0, high=1, search=(0.0, 0.2)),
        "focal_grad": Hyperparam(False, "let gradients flow through the focusing weight"),
    }

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        probs = torch.sigmoid(logits)
        positive = (observed == 1).to(probs.dtype)
        shifted_neg = 1 - probs
        if self.hp["clip"] > 0:
            shifted_neg = (shifted_neg + self.hp["clip"]).clamp(max=1)
        log_likelihood = (positive * torch.log(probs.clamp(min=ASL_EPS))
                          + (1 - positive) * torch.log(shifted_neg.clamp(min=ASL_EPS)))
        if self.hp["gamma_neg"] > 0 or self.hp["gamma_pos"] > 0:
            pt = probs * positive + shifted_neg * (1 - positive)
            gamma = self.hp["gamma_pos"] * positive + self.hp["gamma_neg"] * (1 - positive)
            weight = torch.pow(1 - pt, gamma)
            log_likelihood = log_likelihood * (weight if self.hp["focal_grad"] else weight.detach())
        return -log_likelihood.sum()
