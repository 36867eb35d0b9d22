"""Full — the full-label oracle (upper reference row of every table).

Trained on the complete label matrix instead of the observed one (`trains_on_full_labels`), with the same loss as
AN: l = y nl(p) + (1 - y) nl(1 - p), mean over B x C, nl(u) = -ln(u + 1e-5). With full labels, AN's loss is the
reference's "Full BCE" (COLE `loss_an` on `label_vec_true`).
"""

from bench import Method
from bench.losses import assume_negative_loss


class FullLabels(Method):
    name = "full"
    summary = "full-label oracle: BCE on every true label (upper bound, not a partial-label method)"
    trains_on_full_labels = True

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        return assume_negative_loss(logits, observed)
