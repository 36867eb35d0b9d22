"""The method plugin contract.

A method is a subclass of `Method` in a file under `methods/`. Its core is `batch_loss`, a pure function of
(logits, observed labels of the batch, epoch, dataset indices of the batch) that a test can call without a trainer::

    method = bench.load_method("an")
    loss = method.batch_loss(logits, observed, epoch=1, indices=torch.arange(len(logits)))

Observed labels use the encoding 1 = observed positive, 0 = unobserved, -1 = observed negative; a soft negative
pseudo-label with confidence s (EM+APL) is stored as -s, a value in (-1, 0].

State that lives across batches (ROLE's label estimates, pseudo-labels, corrected labels) belongs to the method or to
`TrainState.observed`, which the trainer owns, passes to the hooks, and checkpoints together with the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from bench.errors import UserError
from bench.hparams import Hyperparam, resolve


@dataclass
class TrainState:
    """What the trainer shares with a method's hooks.

    observed:    N_train x C float tensor on the training device, the current observed label matrix (1/0/-1, soft
                 negatives as -s). Methods that change labels (APL, LL-Cp) write into it; the trainer gathers each
                 batch's rows from it and saves it in checkpoints.
    epochs:      number of training epochs T.
    expected_positives: average number of positives per image of the dataset (ROLE's k̄).
    """

    observed: torch.Tensor
    epochs: int
    expected_positives: float


Predictor = Callable[[], torch.Tensor]
"""Returns sigmoid scores (N_train x C, on the training device) for every training image in dataset order,
computed in eval mode without augmentation."""


class Method:
    """Base class of every method plugin. Subclasses set `name`, `summary` and `hparams` and override `batch_loss`.

    Hooks (all optional) are called by the trainer in this order:
    `setup(state)` once; per batch `batch_loss(...)`, backward, optimizer step, `after_step(...)`;
    `end_of_epoch(epoch, state, predict_train)` after each epoch's training pass, before validation.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    hparams: ClassVar[dict[str, Hyperparam]] = {}
    trains_on_full_labels: ClassVar[bool] = False
    """True for the full-label oracle: the trainer passes the full label matrix as `observed`."""

    def __init__(self, dataset: str | None = None, **values: Any) -> None:
        """Resolve the hyperparameters: `values` over the defaults on `dataset` (None: the global defaults)."""
        self.hp: dict[str, Any] = resolve(self.hparams, values, dataset, owner=f"method {self.name!r}")

    def batch_loss(self, logits: torch.Tensor, observed: torch.Tensor, *, epoch: int,
                   indices: torch.Tensor | None = None) -> torch.Tensor:
        """Scalar loss of one batch. `epoch` is 1-indexed; `indices` are the rows of the batch in the training set."""
        raise NotImplementedError

    @classmethod
    def check_schedule(cls, hparams: dict[str, Any], epochs: int) -> None:
        """UserError when the resolved `hparams` cannot work over `epochs` epochs. Called when a run's spec is made,
        so such a run is refused before anything is written."""

    def setup(self, state: TrainState) -> None:
        """Create state that depends on the training set (called once, before the first epoch)."""

    def extra_param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups the method trains besides the model (e.g. ROLE's label estimates)."""
        return []

    def after_step(self, logits: torch.Tensor, observed: torch.Tensor, indices: torch.Tensor, epoch: int,
                   state: TrainState) -> None:
        """Called after each optimizer step with the batch's (detached) logits and observed labels."""

    def end_of_epoch(self, epoch: int, state: TrainState, predict_train: Predictor) -> None:
        """Called after the training pass of `epoch`, before validation."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to checkpoint with the model (e.g. ROLE's estimates)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` returned."""
        if state:
            raise UserError(f"method {self.name!r} keeps no state, but the checkpoint has {sorted(state)}")

    def to(self, device: torch.device) -> Method:
        """Move any tensors the method owns to `device`."""
        return self
