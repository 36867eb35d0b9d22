"""The papers' early-stopping rules, read off a finished run's per-epoch curve (no extra training).

A run trains every epoch and stores its curve; the trainer picks the `clean`, `observed` and `last` epochs. The
reference implementations stop early, each by its own rule, and report the best epoch seen until then. Both rules
are replayed here on the stored validation curve (clean labels, as the references evaluate):

- `zhou`: Zhou et al. (ECCV 2022, `train.py`) keep the model whenever the validation mAP improves (strictly) and
  stop at the first epoch whose validation mAP does not improve; the reported epoch is the best one before it.
- `ll`: Kim et al. (Large Loss Matters, CVPR 2022) keep the best (strictly greater) and stop once the validation
  mAP falls more than 3 points below it (`bestmap_val - map_val > 3`); the reported epoch is the best one until then.

Either rule reports the last epoch's best if it never stops. Ties keep the earliest epoch, as the strict
comparisons do.
"""

from __future__ import annotations

from typing import Any

LL_DROP = 3.0
"""Points of validation mAP below the best at which Large Loss Matters stops."""

RULES = ("zhou", "ll")


def zhou_epoch(val_maps: list[float]) -> int:
    """The epoch (1-indexed) Zhou et al.'s rule reports on the validation curve `val_maps`."""
    best_epoch = 1
    for epoch in range(2, len(val_maps) + 1):
        if not val_maps[epoch - 1] > val_maps[best_epoch - 1]:
            break
        best_epoch = epoch
    return best_epoch


def ll_epoch(val_maps: list[float], drop: float = LL_DROP) -> int:
    """The epoch (1-indexed) Large Loss Matters' rule reports on the validation curve `val_maps`."""
    best_epoch = 1
    for epoch in range(2, len(val_maps) + 1):
        value = val_maps[epoch - 1]
        if value > val_maps[best_epoch - 1]:
            best_epoch = epoch
        elif val_maps[best_epoch - 1] - value > drop:
            break
    return best_epoch


def rule_selection(curve: list[dict[str, Any]], rule: str) -> dict[str, Any]:
    """{'epoch', 'val_map', 'test_map'} of the epoch `rule` ('zhou' or 'll') reports on a record's curve."""
    val_maps = [point["val_map"] for point in curve]
    epoch = zhou_epoch(val_maps) if rule == "zhou" else ll_epoch(val_maps)
    point = curve[epoch - 1]
    return {"epoch": epoch, "val_map": point["val_map"], "test_map": point["test_map"]}
