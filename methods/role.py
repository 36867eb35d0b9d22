"""EPR and ROLE — the expected-positive family (Cole et al., "Multi-Label Learning from Single Positive Labels",
CVPR 2021; COLE `loss_epr`, `loss_role` + `LabelEstimator`). Both use the expected-positive regulariser

    R(z) = ((1/B) sum_b sum_c z_bc - k)^2 / C^2,   k = expected_num_pos,

added un-normalised to a loss matrix averaged over the B x C entries (nl(u) = -ln(u + 1e-5), y = [observed == 1]).

EPR: l = y nl(p) (unobserved entries contribute 0), L = mean(l) + R(p).

ROLE: its state is a label-estimate matrix Theta (N_train x C logits, a dense parameter trained by the same Adam as
the model, in its own group at lr * lr_mult), estimates y_hat = sigmoid(Theta[indices]) for a batch. With
sg = stop-gradient:

    l_f = y nl(p) + sg(y_hat) nl(p) + (1 - sg(y_hat)) nl(1 - p)          (classifier)
    l_g = y nl(y_hat) + sg(p) nl(y_hat) + (1 - sg(p)) nl(1 - y_hat)      (label estimator)
    R(z) = ((1/B) sum_b sum_c z_bc - k)^2 / C^2
    L = (1/(B C)) sum 0.5 (l_f + l_g) + 0.5 (R(p) + R(y_hat))

Initialisation: observed positives logit(0.995), observed negatives -logit(0.995), unobserved U(-q, q) with
q = logit(0.6); logit clamps p to [1e-5, 1 - 1e-5]. The reference draws the uniform part with an unseeded
`torch.rand`, which makes runs irreproducible; here it is drawn from the run's seeded torch generator.
Because Adam is dense, rows of Theta not in the batch get zero gradient but keep moving on their first moment —
as in the reference (a SparseAdam would differ). Theta is checkpointed with the model (`state_dict`).
Not implemented: the "+LI" linear-initialisation mode (25 epochs of a linear head on frozen features first).
"""

import math

import torch

from bench import Hyperparam, Method
from bench.losses import neg_log

EXPECTED_NUM_POS = Hyperparam(
    0.0, "expected positives per image k; 0 = the training set's mean, taken at setup",
    per_dataset={"voc": 1.5, "coco": 2.9, "nuswide": 1.9, "cub": 31.4, "digits-mosaic": 2.26, "fashion-mosaic": 2.26},
    low=0)
"""COLE's `expected_num_pos`. For the mosaics, 2.26 is the expected number of distinct classes among 1-4 uniformly
drawn items of 10 balanced classes: the mean over n = 1..4 of 10 (1 - 0.9^n)."""


def expected_positive_regulariser(probs: torch.Tensor, expected: float) -> torch.Tensor:
    """R(z) = ((1/B) sum_b sum_c z_bc - k)^2 / C^2 (COLE `expected_positive_regularizer`, norm 2, over C^2)."""
    return (probs.sum(1).mean(0) - expected) ** 2 / probs.shape[1] ** 2


def resolve_expected_positives(value: float, state) -> float:
    """The declared k, or the training set's mean number of positives when it is 0."""
    return value if value > 0 else state.expected_positives


def clamped_logit(p: float) -> float:
    p = min(max(p, 1e-5), 1 - 1e-5)
    return math.log(p / (1 - p))


class ExpectedPositiveRegulariser(Method):
    name = "epr"
    summary = "observed positives only, plus the expected-number-of-positives regulariser (Cole et al.)"
    hparams = {"expected_num_pos": EXPECTED_NUM_POS}

    def setup(self, state):
        self.hp["expected_num_pos"] = resolve_expected_positives(self.hp["expected_num_pos"], state)

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        probs = torch.sigmoid(logits)
        positive = (observed == 1).to(probs.dtype)
        return (positive * neg_log(probs)).mean() + expected_positive_regulariser(probs, self.hp["expected_num_pos"])


class Role(Method):
    name = "role"
    summary = "ROLE: per-example label estimates trained jointly with an expected-positive regulariser"
    hparams = {
        "expected_num_pos": EXPECTED_NUM_POS,
        "lr_mult": Hyperparam(10.0, "learning-rate multiplier of the label estimates", low=0, low_open=True,
                              high=1e4, search=(1.0, 100.0), log=True),
    }

    def __init__(self, dataset=None, **values):
        super().__init__(dataset, **values)
        self.estimates: torch.nn.Parameter | None = None

    def setup(self, state):
        self.hp["expected_num_pos"] = resolve_expected_positives(self.hp["expected_num_pos"], state)
        observed = state.observed
        bound = clamped_logit(0.6)
        theta = (2 * torch.rand(observed.shape, device=observed.device) - 1) * bound
        theta[observed == 1] = clamped_logit(0.995)
        theta[observed == -1] = -clamped_logit(0.995)
        self.estimates = torch.nn.Parameter(theta)

    def extra_param_groups(self, lr):
        return [{"params": [self.estimates], "lr": lr * self.hp["lr_mult"]}]

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        if self.estimates is None:
            raise RuntimeError("ROLE needs setup(state) before batch_loss: it owns per-example label estimates")
        probs = torch.sigmoid(logits)
        estimated = torch.sigmoid(self.estimates[indices])
        positive = (observed == 1).to(probs.dtype)
        est_fixed, probs_fixed = estimated.detach(), probs.detach()
        classifier = positive * neg_log(probs) + est_fixed * neg_log(probs) + (1 - est_fixed) * neg_log(1 - probs)
        estimator = (positive * neg_log(estimated) + probs_fixed * neg_log(estimated)
                     + (1 - probs_fixed) * neg_log(1 - estimated))
        expected = self.hp["expected_num_pos"]
        regulariser = 0.5 * (expected_positive_regulariser(probs, expected)
                             + expected_positive_regulariser(estimated, expected))
        return (0.5 * (classifier + estimator)).mean() + regulariser

    def state_dict(self):
        return {"estimates": self.estimates.detach().clone()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.estimates.copy_(state["estimates"])

    def to(self, device):
        if self.estimates is not None:
            self.estimates.data = self.estimates.data.to(device)
        return self
