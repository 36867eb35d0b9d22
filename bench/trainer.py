"""The one trainer every method and dataset goes through.

Per run: assemble the run's data (`bench.rundata`: splits as uint8 tensors on the training device, batched by
indexing; the observed labels), build backbone -> CAM head -> [BoostLU] -> GAP, and train with Adam (CAM head at
lr * head_lr_mult, method parameter groups such as ROLE's label estimates), the learning rate following the run's
schedule epoch by epoch. After every epoch the model is evaluated on the validation split twice (full labels, and
the observed labels alone) and on the test split, and the share of memorised false negatives is noted. At the end
three results are read off the same run, and the test mAP never selects anything:

- `clean`: the epoch with the best validation mAP on full labels (the papers' protocol);
- `observed`: the epoch with the best validation mAP on observed labels (realistic: no clean labels exist);
- `last`: the last epoch (no early stopping: what memorisation leaves).

Ties go to the earliest epoch. Tensors are channels_last (faster with oneDNN and cuDNN alike); on CUDA it uses
bf16 autocast; on CPU it is deterministic for a given spec and numerics (`bench.numerics`).

Two settings of Cole et al. change what is trained:
- `freeze_backbone` (linear): the CAM head alone, on the frozen backbone's pooled features (`bench.features`,
  computed once and cached), with no augmentation;
- LinearInit (`+li`): first such a linear stage (`li_epochs` at `li_lr`, its best clean-validation epoch's head and
  method parameters, e.g. ROLE's label estimates, kept), then end-to-end training from that head; the record keeps
  the linear stage's curve under `linear_stage`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench import checkpoints, registry
from bench.errors import UserError
from bench.features import pooled_features
from bench.method import Method, TrainState
from bench.metrics import average_precision
from bench.model import build_model
from bench.numerics import determinism_note
from bench.rundata import Evaluation, batches, normalise, prepare_data
from bench.spec import RunSpec

EVAL_BATCH = 512
SELECTIONS = ("clean", "observed", "last")
"""How a run's reported epoch is chosen: best clean validation mAP, best observed validation mAP, last epoch."""


class NumericalFault(Exception):
    """A non-finite loss or parameter: the run is recorded as failed, never as a result."""


def learning_rate_factor(schedule: str, epoch: int, epochs: int) -> float:
    """Multiplier of the base learning rates during `epoch` (1-indexed): 1 for 'constant'; for 'cosine',
    0.5 (1 + cos(pi (epoch - 1) / epochs)), which starts at 1 and ends near 0."""
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))
    return 1.0


@dataclass
class Progress:
    """What a run has produced so far; saved in the epoch checkpoint."""

    epoch: int = 0
    curve: list[dict[str, float]] = field(default_factory=list)
    test_per_class: list[list[float]] = field(default_factory=list)
    best_val: float = -math.inf
    best: dict[str, Any] | None = None
    seconds: float = 0.0
    linear_stage: dict[str, Any] | None = None

    def selected_epoch(self, selection: str) -> int:
        """The epoch `selection` picks (1-indexed); the first one on ties."""
        if selection == "last":
            return len(self.curve)
        key = "val_map" if selection == "clean" else "val_map_observed"
        values = [point[key] for point in self.curve]
        return values.index(max(values)) + 1


class Trainer:
    """Trains one RunSpec. `run()` returns the record fields of a finished run."""

    def __init__(self, spec: RunSpec, cache_dir: Path, *, progress: bool = True) -> None:
        self.spec = spec
        self.device = torch.device(spec.device)
        self.cuda = self.device.type == "cuda"
        self.progress = progress and sys.stderr.isatty()
        torch.manual_seed(spec.seed)
        method_class = registry.method_class(spec.method)
        self.data = prepare_data(spec.dataset, spec.data_dir, spec.image_size, spec.protocol, spec.label_seed,
                                 method_class.trains_on_full_labels, cache_dir, self.device)
        self.method: Method = method_class(spec.dataset, **spec.method_hparams()).to(self.device)
        self.cache_dir = cache_dir
        self.linear = spec.freeze_backbone
        self.features = pooled_features(spec, self.data, cache_dir, self.device) if self.linear else None
        self.train_inputs = self.features.train if self.linear else self.data.train_images
        self.val_inputs = self.features.val if self.linear else self.data.val_clean.images
        self.test_inputs = self.features.test if self.linear else self.data.test.images
        self.model = build_model(spec, self.data.train_images.shape[1], len(self.data.class_names),
                                 self.features.channels if self.linear else None).to(self.device)
        self.state = TrainState(observed=self.data.train_targets, epochs=spec.epochs,
                                expected_positives=self.data.expected_positives)
        self.method.setup(self.state)
        groups = self.model.param_groups(spec.lr, spec.head_lr_mult) + self.method.extra_param_groups(spec.lr)
        self.optimizer = torch.optim.Adam(groups, lr=spec.lr, foreach=True)
        self.base_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.shuffle = torch.Generator().manual_seed(spec.seed)
        self.best_model: dict[str, torch.Tensor] | None = None
        self.best_method: dict[str, torch.Tensor] | None = None

    def model_input(self, batch: torch.Tensor, flip_mask: torch.Tensor | None = None) -> torch.Tensor:
        """What the model reads: normalised (and flipped) images, or pooled features as they are."""
        if self.linear:
            return batch
        return normalise(batch, self.data.mean, self.data.std, flip_mask)

    def autocast(self) -> torch.autocast:
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda)

    @torch.inference_mode()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Float32 sigmoid scores of `images` in eval mode, on the device (no per-batch host copy)."""
        self.model.eval()
        scores = torch.empty(len(images), self.model.cam_head.out_channels, device=self.device)
        order = torch.arange(len(images), device=self.device if isinstance(images, torch.Tensor) else "cpu")
        for indices, batch in batches(images, order, EVAL_BATCH):
            with self.autocast():
                logits = self.model(self.model_input(batch.to(self.device, non_blocking=True)))
            scores[indices.to(self.device)] = torch.sigmoid(logits.float())
        return scores

    # --- one epoch --------------------------------------------------------------------------------------------------

    def set_learning_rate(self, epoch: int) -> None:
        factor = learning_rate_factor(self.spec.lr_schedule, epoch, self.spec.epochs)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training set; returns (mean batch loss, share of memorised false negatives).

        The share is measured on the training pass itself, as the LL paper does: of the training entries that are
        truly positive but not observed, the share whose logit the model put below 0 (score below 0.5) when it saw
        them in this epoch. A non-finite loss is noted on the device (no host sync per batch) and raised as
        NumericalFault, naming the first bad batch, once the pass is over; so is a non-finite parameter.
        """
        self.model.train()
        images = self.train_inputs
        order = torch.randperm(len(images), generator=self.shuffle)
        if isinstance(images, torch.Tensor):
            order = order.to(self.device)
        num_batches = -(-len(order) // self.spec.batch_size)
        total = torch.zeros((), device=self.device)
        memorised = torch.zeros((), device=self.device, dtype=torch.long)
        first_bad = torch.full((), -1, device=self.device)
        for number, (indices, batch) in enumerate(tqdm(
                batches(images, order, self.spec.batch_size), total=num_batches, leave=False, unit="batch",
                desc=f"{self.spec.variant} epoch {epoch}/{self.spec.epochs}", disable=not self.progress), 1):
            indices = indices.to(self.device)
            flip = None
            if self.data.train_flip and not self.linear:
                flip = (torch.rand(len(indices), generator=self.shuffle) < 0.5).to(self.device)
            with self.autocast():
                logits = self.model(self.model_input(batch.to(self.device, non_blocking=True), flip)).float()
            observed = self.state.observed[indices]
            loss = self.method.batch_loss(logits, observed, epoch=epoch, indices=indices)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.method.after_step(logits.detach(), observed, indices, epoch, self.state)
            loss = loss.detach()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), number, first_bad)
            total += loss
            memorised += ((logits.detach() < 0) & self.data.false_negatives[indices]).sum()
        self.check_finite(epoch, int(first_bad), num_batches)
        num_false_negatives = int(self.data.false_negatives.sum())
        share = float(memorised) / num_false_negatives if num_false_negatives else 0.0
        return float(total) / num_batches, share

    def check_finite(self, epoch: int, first_bad_batch: int, num_batches: int) -> None:
        where = f"method {self.spec.variant}, dataset {self.spec.dataset}, seed {self.spec.seed}, epoch {epoch}"
        if first_bad_batch > 0:
            raise NumericalFault(f"non-finite loss in {where}, batch {first_bad_batch} of {num_batches}")
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise NumericalFault(f"non-finite parameters (a non-finite gradient) in {where}")

    def evaluate(self) -> tuple[float, float, np.ndarray]:
        """(clean validation mAP, observed validation mAP, per-class test AP), mAPs in percent."""
        val_scores = self.predict(self.val_inputs).cpu().numpy()
        test_scores = self.predict(self.test_inputs).cpu().numpy()
        return (mean_ap(val_scores, self.data.val_clean), mean_ap(val_scores, self.data.val_observed),
                average_precision(test_scores, self.data.test.targets, self.data.test.known))

    # --- the whole run ----------------------------------------------------------------------------------------------

    def run(self, *, resume_path: Path | None = None,
            on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, Any]:
        """Train every epoch, then return the record fields (the three selections, the curve, costs).

        resume_path: an epoch checkpoint file. If it exists, training continues after its epoch (with the same
            model, optimizer, method state, labels and random generators, so the result equals an uninterrupted
            run's); after every epoch it is rewritten atomically. The caller deletes it when the run is recorded.
        on_epoch: called as on_epoch(epoch, point) after every evaluation, `point` holding the epoch's train_loss,
            val_map, val_map_observed, test_map and fn_memorised; it may raise to stop the run (tuning prunes
            trials this way).
        Raises NumericalFault for a non-finite loss or parameter, UserError for CUDA running out of memory.
        """
        try:
            progress = self.restore(resume_path) if resume_path is not None and resume_path.exists() else Progress()
            if self.spec.linear_init and progress.linear_stage is None:
                progress.linear_stage = self.run_linear_stage()
            started = time.perf_counter() - progress.seconds
            for epoch in range(progress.epoch + 1, self.spec.epochs + 1):
                point = self.train_and_evaluate(epoch, progress)
                progress.seconds = time.perf_counter() - started
                if resume_path is not None:
                    self.save_progress(resume_path, progress)
                if on_epoch is not None:
                    on_epoch(epoch, point)
            return self.results(progress, time.perf_counter() - started)
        except torch.OutOfMemoryError:
            raise UserError(f"out of GPU memory with batch_size={self.spec.batch_size} on {self.device}: run again "
                            f"with a smaller one (e.g. --set batch_size={max(1, self.spec.batch_size // 2)}); the "
                            "batch size is never changed behind your back") from None

    def train_and_evaluate(self, epoch: int, progress: Progress) -> dict[str, float]:
        """Train `epoch`, run the method's end-of-epoch step, evaluate, and add the epoch to `progress`."""
        self.set_learning_rate(epoch)
        train_loss, memorised = self.train_epoch(epoch)
        self.method.end_of_epoch(epoch, self.state, lambda: self.predict(self.train_inputs))
        val_map, val_map_observed, test_per_class = self.evaluate()
        point = {"epoch": epoch, "train_loss": train_loss, "val_map": val_map, "val_map_observed": val_map_observed,
                 "test_map": 100 * float(test_per_class.mean()), "fn_memorised": memorised}
        progress.curve.append(point)
        progress.test_per_class.append([float(ap) for ap in test_per_class])
        if val_map > progress.best_val:
            progress.best_val = val_map
            progress.best = copy.deepcopy(self.model.state_dict())
            self.best_method = copy.deepcopy(self.method.state_dict()) if self.linear else None
        progress.epoch = epoch
        return point

    def results(self, progress: Progress, seconds: float) -> dict[str, Any]:
        """The record fields of a finished run; keeps the best (clean) epoch's weights in `best_model`."""
        self.best_model = progress.best
        selections = {}
        for selection in SELECTIONS:
            epoch = progress.selected_epoch(selection)
            point = progress.curve[epoch - 1]
            per_class = progress.test_per_class[epoch - 1]
            selections[selection] = {
                "epoch": epoch, "val_map": point["val_map_observed" if selection == "observed" else "val_map"],
                "test_map": point["test_map"],
                "per_class_ap": {name: 100 * ap for name, ap in zip(self.data.class_names, per_class, strict=True)}}
        clean = selections["clean"]
        return {
            "val_map": clean["val_map"], "test_map": clean["test_map"], "best_epoch": clean["epoch"],
            "per_class_ap": clean["per_class_ap"], "selections": selections, "curve": progress.curve,
            "train_seconds": seconds, "peak_memory_mb": peak_memory_mb(self.device),
            "label_checksum": self.data.label_checksum, "image_shape": list(self.data.train_images.shape[1:]),
            "determinism": determinism_note(self.device.type),
            **({"features": self.features.checksum} if self.linear else {}),
            **({"linear_stage": progress.linear_stage} if progress.linear_stage else {}),
            **({"class_groups": dict(zip(self.data.class_names, self.data.class_groups, strict=True))}
               if self.data.class_groups else {}),
        }

    def run_linear_stage(self) -> dict[str, Any]:
        """LinearInit's first stage: train the head on the frozen backbone's pooled features for `li_epochs` at
        `li_lr`, then start this model's head and the method's parameters from that stage's best clean-validation
        epoch. Returns the stage's summary for the record (not checkpointed: it is re-run, identically, if the run
        is stopped before its first end-to-end epoch)."""
        stage_spec = dataclasses.replace(self.spec, freeze_backbone=True, linear_init=False, epochs=self.spec.li_epochs,
                                         lr=self.spec.li_lr, li_epochs=None, li_lr=None)
        stage = Trainer(stage_spec, self.cache_dir, progress=self.progress)
        result = stage.run()
        head = {name.removeprefix("cam_head."): value for name, value in stage.best_model.items()
                if name.startswith("cam_head.")}
        self.model.cam_head.load_state_dict(head)
        self.method.load_state_dict(stage.best_method)
        return {"epochs": stage_spec.epochs, "lr": stage_spec.lr, "best_epoch": result["best_epoch"],
                "val_map": result["val_map"], "test_map": result["test_map"], "curve": result["curve"],
                "train_seconds": result["train_seconds"], "features": result["features"]}

    # --- epoch checkpoints ------------------------------------------------------------------------------------------

    def save_progress(self, path: Path, progress: Progress) -> None:
        """The epoch checkpoint: progress plus model, optimizer, method, labels and random generator states."""
        checkpoints.save({**asdict(progress), "run_key_fields": self.spec.to_dict(),
                          "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                          "method": self.method.state_dict(), "observed": self.state.observed,
                          "shuffle_rng": self.shuffle.get_state(), "torch_rng": torch.get_rng_state()}, path)

    def restore(self, path: Path) -> Progress:
        """Load an epoch checkpoint written by `save_progress` for this very spec."""
        state = checkpoints.load(path)
        if state.get("run_key_fields") != self.spec.to_dict():
            raise UserError(f"checkpoint {path} belongs to another run; delete it to start this run afresh")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.method.load_state_dict(state["method"])
            progress = Progress(**{name: state[name] for name in Progress.__dataclass_fields__})
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            raise UserError(f"checkpoint {path} does not fit this model ({str(error).splitlines()[0]}); "
                            "delete it to start this run afresh") from None
        self.state.observed.copy_(state["observed"])
        self.shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        return progress

    def save_best(self, path: Path) -> None:
        """Write the best (clean) epoch's weights, loadable with weights_only=True, for the figures."""
        checkpoints.save({"model": self.best_model}, path)


def mean_ap(scores: np.ndarray, evaluation: Evaluation) -> float:
    """mAP in percent of `scores` on one evaluation set."""
    return 100 * float(average_precision(scores, evaluation.targets, evaluation.known).mean())


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: GPU memory allocated on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
