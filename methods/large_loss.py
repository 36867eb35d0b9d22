"""LL-R, LL-Ct, LL-Cp — large loss modification (Kim et al., "Large Loss Matters in Weakly Supervised Multi-Label
Classification", CVPR 2022; LL/BG `compute_batch_loss`), on logits with an exact BCE.

With y = clip(observed, 0), l = BCE(x, y) and l~ = BCE(x, 1 - y) per entry, u = [observed == 0] (unobserved) and
M = u * l: at epoch e (1-indexed) the rejection rate is r_e = 1 - clean_rate, where clean_rate starts at 1 and drops
by delta_rel after every epoch. Epoch 1 is plain assume-negative BCE. From epoch 2 on:

    k = ceil(B C r_e)                 (LL-R, LL-Ct; B is the actual batch size)
    k = ceil(B C delta_rel)           (LL-Cp, constant)
    tau = k-th largest entry of M over the unobserved entries,  S = {(b, c) unobserved : M_bc >= tau}
    LL-R : 0 on S, l elsewhere (rejection)
    LL-Ct: l~ on S, l elsewhere (temporary correction: the target flips to 1)
    LL-Cp: as LL-Ct, and after the optimizer step the entries of S become observed positives for good
    L = mean over all B x C entries (rejected entries stay in the denominator)

Ties at tau make |S| > k, as in the reference. Deliberate fixes of the reference code:
- LL-Cp really corrects labels permanently. In snucml/LargeLossMatters `P['mod_scheme'] is 'LL-Cp'` is always
  False, so its LL-Cp silently runs LL-Ct; BoostLU's fork fixed that with `==`, as here.
- S is restricted to unobserved entries and k is capped at their number. Without that, tau can reach 0 (k larger
  than the number of positive entries of M) and S takes every entry, observed positives included; and `topk`
  raises for k > B C.
- The LL repo builds the permanent-correction set with M > tau (excluding the k-th entry, so with k = 1 nothing is
  ever corrected); like BG, both sets use M >= tau here.

clean_rate: by default the reference's float arithmetic (1.0 minus delta_rel, repeated), which makes some k one
larger than the exact value (VOC LL-R epoch 6: 9 instead of 8); `exact_schedule=true` uses exact decimal arithmetic.
Defaults of delta_rel: LL-R 0.5 %, LL-Ct 0.2 %, LL-Cp 0.1 % (the BoostLU repository's `config.py`), over the papers'
10 epochs. On the mosaics, 12.6 % of the training entries are false negatives (2.26 positives per image, one
observed, 10 classes) against about 2.5 % on VOC and COCO, so the rates scale up: the last epoch rejects 20 % (LL-R)
or corrects 8 % (LL-Ct) of the entries, about 1.6 and 0.6 times the false-negative rate as on VOC (4.5 % and 1.8 %
against 2.5 %), and LL-Cp corrects 4 % of the entries per batch in total over the epochs. Spread over a mosaic's
default epochs E (12 on digits-mosaic, 18 on fashion-mosaic): delta_rel = 0.20 / (E - 1), 0.08 / (E - 1) and
0.04 / (E - 1), rounded to 4 decimals.
"""

import math
from fractions import Fraction

import torch
import torch.nn.functional as F

from bench import Hyperparam, Method


def rejection_rate(epoch: int, delta_rel: float, exact: bool = False) -> float | Fraction:
    """r_e = 1 - clean_rate at `epoch` (clean_rate = 1 at epoch 1, minus delta_rel after every epoch)."""
    if exact:
        return (epoch - 1) * Fraction(str(delta_rel))
    clean_rate = 1.0
    for _ in range(epoch - 1):
        clean_rate -= delta_rel
    return 1 - clean_rate


def rejection_count(constant: bool, epoch: int, batch_size: int, num_classes: int, delta_rel: float,
                    exact: bool = False) -> int:
    """k of the epoch: 0 in epoch 1, then ceil(B C r_e) (LL-R, LL-Ct: a growing rate) or, with `constant`,
    ceil(B C delta_rel) (LL-Cp)."""
    if epoch == 1:
        return 0
    rate = Fraction(str(delta_rel)) if exact else delta_rel
    if not constant:
        rate = rejection_rate(epoch, delta_rel, exact)
    return math.ceil(batch_size * num_classes * rate)


class LargeLoss(Method):
    """Shared machinery of the three schemes; subclasses set `name`, `summary` and the delta_rel default."""

    correct_selected = True   # LL-Ct, LL-Cp: l~ on S; LL-R: 0 on S
    permanent = False         # LL-Cp only: corrections kept for good, at a constant rate

    @classmethod
    def declare(cls, delta_default: float, mosaic_deltas: dict[str, float]) -> dict[str, Hyperparam]:
        return {
            "delta_rel": Hyperparam(delta_default, "growth of the rejection rate per epoch (0.005 = 0.5 %)", low=0,
                                    high=1, low_open=True, high_open=True, search_around=4.0, log=True,
                                    per_dataset=mosaic_deltas),
            "exact_schedule": Hyperparam(False, "exact decimal clean_rate instead of the reference's float drift"),
        }

    def selected(self, logits: torch.Tensor, observed: torch.Tensor, epoch: int) -> torch.Tensor:
        """Boolean B x C mask S of the large-loss unobserved entries (empty in epoch 1)."""
        unobserved = observed == 0
        k = rejection_count(self.permanent, epoch, logits.shape[0], logits.shape[1], self.hp["delta_rel"],
                            self.hp["exact_schedule"])
        k = min(k, int(unobserved.sum()))
        if k == 0:
            return torch.zeros_like(unobserved)
        targets = observed.clamp(min=0)
        large = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").masked_fill(~unobserved, -1.0)
        threshold = torch.topk(large.flatten(), k).values[-1]
        return unobserved & (large >= threshold)

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        targets = observed.clamp(min=0)
        loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        chosen = self.selected(logits.detach(), observed, epoch)
        if self.correct_selected:
            replacement = F.binary_cross_entropy_with_logits(logits, 1 - targets, reduction="none")
        else:
            replacement = torch.zeros_like(loss)
        return torch.where(chosen, replacement, loss).mean()

    def after_step(self, logits, observed, indices, epoch, state):
        if self.permanent:
            rows, classes = torch.nonzero(self.selected(logits, observed, epoch), as_tuple=True)
            state.observed[indices[rows], classes] = 1.0


class LargeLossRejection(LargeLoss):
    name = "ll-r"
    summary = "LL-R: reject (zero) the largest losses among unobserved labels, a growing share per epoch"
    hparams = LargeLoss.declare(0.005, {"digits-mosaic": 0.0182, "fashion-mosaic": 0.0118})
    correct_selected = False


class LargeLossTemporaryCorrection(LargeLoss):
    name = "ll-ct"
    summary = "LL-Ct: flip the target of the largest-loss unobserved labels to positive, for that batch"
    hparams = LargeLoss.declare(0.002, {"digits-mosaic": 0.0073, "fashion-mosaic": 0.0047})


class LargeLossPermanentCorrection(LargeLoss):
    name = "ll-cp"
    summary = "LL-Cp: make the largest-loss unobserved labels observed positives for good (k = ceil(BC delta))"
    hparams = LargeLoss.declare(0.001, {"digits-mosaic": 0.0036, "fashion-mosaic": 0.0024})
    permanent = True
