"""EM and EM+APL — entropy maximisation and asymmetric pseudo-labelling (Zhou et al., "Acknowledging the Unknown
for Multi-label Learning with Single Positive Labels", ECCV 2022; ZHOU `loss_EM`, `loss_EM_APL`,
`aysmmetric_pseudo_labeling`).

With p = sigmoid(x), nl(u) = -ln(u + 1e-5) and H(p) = p nl(p) + (1 - p) nl(1 - p), per entry:

    observed == 1            : nl(p)
    observed == 0 (unknown)  : -alpha H(p)                        (maximise the entropy of unknowns)
    -1 < observed < 0        : beta [s nl(p) + (1 - s) nl(1 - p)],  s = -observed   (soft negative pseudo-label)
    observed == -1           : nl(1 - p)                          (a truly observed negative, partial protocols)

averaged over the B x C entries. The reference has no observed negatives (single positive) and would read -1 as a
soft label with s = 1; here -1 is kept for real observed negatives and pseudo-labels live in (-1, 0).

APL, as the released code does it: U_c = number of unknown training entries of class c at the
start (fixed). After the training pass of every epoch e >= warmup (1-indexed) except the last (whose labels would
never be used), predict every training image and, for each class, take the n_c = int(theta * U_c / (T - warmup))
unknown entries with the lowest score (fewer if fewer remain) and set observed <- -p. Pseudo-labels are never
revised, and no positive pseudo-label is ever made. Two deliberate differences from the reference: the predictions
come from the unshuffled, unaugmented training set (the reference uses its shuffled loader with random flips, which
makes the step depend on augmentation noise), and the confidence is clamped to [1e-12, 1 - 1e-6], so that a score
of exactly 0 is stored as a pseudo-label rather than as -0.0 == unknown. Ties in the lowest scores are broken by
row order (a stable sort). n_c is computed in the reference's order (theta times U_c, then divided): in floating
point, (theta / (T - T_w)) * U_c falls just short of an integer quotient and would take one entry fewer (theta =
0.3, T - T_w = 6, U_c = 20 gives 1 in the reference's order, 0.99999... -> 0 in the other).

Warm-up on the mosaics: half of their default epochs (6 of 12 on digits-mosaic, 9 of 18 on fashion-mosaic), the
share the paper uses on VOC and COCO (5 of 10).
"""

import torch

from bench import Hyperparam, Method, UserError
from bench.losses import neg_log

EM_ALPHA = Hyperparam(0.1, "weight alpha of the entropy of unknown labels", low=0, high=10, search=(0.01, 1.0),
                      log=True, per_dataset={"voc": 0.2, "coco": 0.1, "nuswide": 0.1, "cub": 0.01})


def entropy_maximisation_terms(probs: torch.Tensor, observed: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-entry EM loss for observed positives, unknowns and observed negatives (0 elsewhere)."""
    entropy = probs * neg_log(probs) + (1 - probs) * neg_log(1 - probs)
    return torch.where(observed == 1, neg_log(probs),
                       torch.where(observed == 0, -alpha * entropy,
                                   torch.where(observed == -1, neg_log(1 - probs), torch.zeros_like(probs))))


class EntropyMaximisation(Method):
    name = "em"
    summary = "EM: observed positives by BCE, entropy of unknown labels maximised (Zhou et al.)"
    hparams = {"em_alpha": EM_ALPHA}

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        probs = torch.sigmoid(logits)
        return entropy_maximisation_terms(probs, observed, self.hp["em_alpha"]).mean()


class EntropyMaximisationAPL(Method):
    name = "em-apl"
    summary = "EM + asymmetric pseudo-labelling: lowest-scoring unknowns become soft negatives after warm-up"
    hparams = {
        "em_alpha": EM_ALPHA,
        "apl_beta": Hyperparam(0.2, "weight beta of the soft negative pseudo-labels", low=0, high=10,
                               search=(0.01, 1.0), log=True,
                               per_dataset={"voc": 0.02, "coco": 0.9, "nuswide": 0.2, "cub": 0.4}),
        "apl_warmup": Hyperparam(5, "first epoch T_w after which pseudo-labels are made (1-indexed)", low=1,
                                 high=1000, per_dataset={"voc": 5, "coco": 5, "nuswide": 4, "cub": 3,
                                                         "digits-mosaic": 6, "fashion-mosaic": 9}),
        "neg_proportion": Hyperparam(0.9, "share theta of each class's unknowns pseudo-labelled by the end", low=0,
                                     high=1, search=(0.5, 0.95)),
    }

    @classmethod
    def check_schedule(cls, hparams, epochs):
        if hparams["apl_warmup"] >= epochs:
            raise UserError(f"em-apl: apl_warmup={hparams['apl_warmup']} must be below epochs={epochs}, "
                            "or no pseudo-label is ever used")

    def setup(self, state):
        self.unknown_per_class = (state.observed == 0).sum(0)

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        probs = torch.sigmoid(logits)
        terms = entropy_maximisation_terms(probs, observed, self.hp["em_alpha"])
        confidence = -observed
        soft = (observed < 0) & (observed > -1)
        pseudo = self.hp["apl_beta"] * (confidence * neg_log(probs) + (1 - confidence) * neg_log(1 - probs))
        return torch.where(soft, pseudo, terms).mean()

    def per_epoch_quota(self, epochs: int) -> torch.Tensor:
        """n_c = int(theta * U_c / (T - T_w)) for every class, in the reference's order of operations."""
        theta, remaining = self.hp["neg_proportion"], epochs - self.hp["apl_warmup"]
        return torch.tensor([int(theta * int(u) / remaining) for u in self.unknown_per_class.tolist()])

    def end_of_epoch(self, epoch, state, predict_train):
        if epoch < self.hp["apl_warmup"] or epoch >= state.epochs:
            return
        scores = predict_train()
        observed = state.observed
        for c, quota in enumerate(self.per_epoch_quota(state.epochs).tolist()):
            candidates = torch.nonzero(observed[:, c] == 0).squeeze(1)
            if quota == 0 or len(candidates) == 0:
                continue
            order = torch.argsort(scores[candidates, c], stable=True)[:quota]
            chosen = candidates[order]
            observed[chosen, c] = -scores[chosen, c].clamp(1e-12, 1 - 1e-6)

    def state_dict(self):
        return {"unknown_per_class": self.unknown_per_class.clone()}

    def load_state_dict(self, state):
        self.unknown_per_class = state["unknown_per_class"].clone()
