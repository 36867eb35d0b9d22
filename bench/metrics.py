"""Average precision exactly as the reference evaluation of Cole et al. and its descendants.

AP_c is sklearn's `average_precision_score`: non-interpolated, sum over distinct score thresholds of
(R_n - R_{n-1}) * P_n, with tied scores forming one threshold. A class with no positive in the evaluated set gets
AP = 0 and stays in the mean (the reference's rule; sklearn's own behaviour for that case changed across versions,
so it is implemented here explicitly). Scores are float32 sigmoid probabilities, as in the reference: saturated
scores (sigmoid = 1.0 in float32 for logits above ~17) tie, and those ties count, as in the reference.
"""

from __future__ import annotations

import numpy as np


def average_precision(scores: np.ndarray, targets: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """Per-class AP (values in [0, 1]) of N x C `scores` against N x C binary `targets` (target = label == 1).

    known: optional N x C mask of annotated entries (partially annotated test sets such as OpenImages): each class's
    AP is computed over the images annotated for it only.
    """
    scores = np.asarray(scores)
    positive = np.asarray(targets) == 1
    num_classes = scores.shape[1]
    ap = np.zeros(num_classes, dtype=np.float64)
    for c in range(num_classes):
        rows = slice(None) if known is None else np.asarray(known[:, c], dtype=bool)
        class_scores, class_positive = scores[rows, c], positive[rows, c]
        num_pos = int(class_positive.sum())
        if num_pos == 0:
            continue
        order = np.argsort(-class_scores, kind="mergesort")
        sorted_scores = class_scores[order]
        true_pos = np.cumsum(class_positive[order])
        # the last position of each group of tied scores is one threshold
        last_of_tie = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
        tp = true_pos[last_of_tie].astype(np.float64)
        predicted = np.nonzero(last_of_tie)[0] + 1.0
        precision = tp / predicted
        recall_gain = np.diff(np.r_[0.0, tp]) / num_pos
        ap[c] = float(np.sum(recall_gain * precision))
    return ap

