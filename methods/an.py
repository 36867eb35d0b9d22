"""AN — assume negative (Cole et al., "Multi-Label Learning from Single Positive Labels", CVPR 2021).

Every unobserved label is taken as negative:

    y = [observed == 1],   l_bc = y nl(p) + (1 - y) nl(1 - p),   L = mean over the B x C entries,

with p = sigmoid(x) and nl(u) = -ln(u + 1e-5), the clamped log of the reference code (COLE `loss_an`). The δ caps
each entry at ln(1e5) ≈ 11.51; it is kept (rather than an exact logits BCE, as LL/BG use) so that AN reproduces
the COLE/ZHOU rows of the published tables (METHODS_SPEC §4.12).
"""

from bench import Method
from bench.losses import assume_negative_loss


class AssumeNegative(Method):
    name = "an"
    summary = "assume negative: unobserved labels are trained as negatives (BCE with the reference's clamped log)"

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        return assume_negative_loss(logits, observed)
