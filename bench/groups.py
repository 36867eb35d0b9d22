"""Classes grouped by annotation frequency (Large Loss Matters' OpenImages table): the classes are sorted by their
number of annotations in the training split, fewest first, and cut into equal groups without overlap (OpenImages
V3: 5,000 trainable classes, 5 groups of 1,000; group 1 has the fewest annotations, group 5 the most).

An annotation is a human-verified label of an image for the class, positive or negative (a non-zero entry of the
dataset's own annotation matrix). Ties in the count keep the class order of the class list (a stable sort), and
when the number of classes is not a multiple of the number of groups the first groups get one class more
(`numpy.array_split`). A group's mAP is the mean of its classes' test AP.
"""

from __future__ import annotations

import numpy as np


def frequency_groups(annotated_train: np.ndarray, groups: int) -> list[int]:
    """The group (1 = fewest annotations) of every class (column) of the N_train x C annotation matrix."""
    counts = (annotated_train != 0).sum(axis=0)
    order = np.argsort(counts, kind="stable")
    group_of = np.empty(len(counts), dtype=int)
    for group, members in enumerate(np.array_split(order, groups), 1):
        group_of[members] = group
    return group_of.tolist()


def group_maps(per_class_ap: dict[str, float], class_groups: dict[str, int]) -> dict[int, float]:
    """group -> mean AP (in the units of `per_class_ap`) of its classes."""
    members: dict[int, list[float]] = {}
    for name, group in class_groups.items():
        members.setdefault(group, []).append(per_class_ap[name])
    return {group: float(np.mean(values)) for group, values in sorted(members.items())}
