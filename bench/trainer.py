"""The one trainer every method and dataset goes through (DESIGN.md, data flow).

Per run: load the dataset's splits (held as uint8 tensors on the training device and batched by indexing: no
per-sample Python), draw the observed labels, build backbone -> CAM head -> [BoostLU] -> GAP, train with Adam
(CAM head at lr * head_lr_mult, method parameter groups such as ROLE's label estimates), evaluate validation mAP
after every epoch, keep the best epoch (strictly greater validation mAP, first epoch wins ties), and evaluate the
test set once with the best epoch's weights. Tensors are channels_last (faster with oneDNN and cuDNN alike); on
CUDA it uses bf16 autocast; on CPU it is deterministic for a given seed.
"""

from __future__ import annotations

import copy
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench import observation, registry
from bench.dataset import Splits
from bench.errors import UserError
from bench.method import Method, TrainState
from bench.metrics import average_precision
from bench.model import CamClassifier, build_backbone
from bench.spec import RunSpec

EVAL_BATCH = 512


def resolve_device(requested: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without a GPU is an error."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA GPU is visible; use --device cpu or auto")
    if requested not in ("cpu", "cuda"):
        raise UserError(f"unknown device {requested!r}; use auto, cpu or cuda")
    return requested


@lru_cache(maxsize=4)
def load_splits(dataset: str, data_dir: str | None, cache_dir: str, image_size: int = 0) -> Splits:
    """The dataset's splits, loaded once per process (a benchmark trains many runs on the same data)."""
    plugin = registry.load_dataset(dataset)
    return plugin.load(Path(data_dir) if data_dir else None, Path(cache_dir), image_size or None)


def batches(images, order: torch.Tensor, batch_size: int):
    """(indices, uint8 batch) in `order`: slices of an in-memory tensor, or an image store's decoded batches."""
    chunks = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    if isinstance(images, torch.Tensor):
        yield from ((chunk, images[chunk]) for chunk in chunks)
    else:
        yield from zip(chunks, images.batches(order, batch_size), strict=True)


@dataclass
class RunData:
    """Everything the training loop reads, already on the device."""

    train_images: torch.Tensor
    train_targets: torch.Tensor  # what the method sees: observed labels, or full labels for the oracle
    val_images: torch.Tensor
    val_targets: np.ndarray
    val_known: np.ndarray | None
    test_images: torch.Tensor
    test_labels: np.ndarray
    test_known: np.ndarray | None
    mean: torch.Tensor
    std: torch.Tensor
    train_flip: bool
    label_checksum: str
    expected_positives: float
    class_names: list[str]


def observed_labels(splits: Splits, protocol: str, label_seed: int) -> np.ndarray:
    """Observed matrix of train and val rows (train first), precomputed by the dataset or drawn here."""
    if (protocol, label_seed) in splits.observed:
        return splits.observed[(protocol, label_seed)]
    trainval = np.concatenate([splits.train.labels, splits.val.labels])
    return observation.observe(trainval, protocol, label_seed)


def prepare_data(spec: RunSpec, cache_dir: Path, device: torch.device) -> RunData:
    splits = load_splits(spec.dataset, spec.data_dir, str(cache_dir), spec.image_size)
    observed = observed_labels(splits, spec.protocol, spec.label_seed)
    num_train = len(splits.train)
    train_observed, val_observed = observed[:num_train], observed[num_train:]
    method_cls = registry.method_class(spec.method)
    train_targets = splits.train.labels if method_cls.trains_on_full_labels else train_observed
    val_targets = splits.val.labels if spec.val_variant == "clean" else (val_observed == 1).astype(np.float32)
    shape = (1, -1, 1, 1)
    return RunData(
        train_images=splits.train.images.to(device), train_targets=torch.as_tensor(train_targets, dtype=torch.float32,
                                                                                   device=device).clone(),
        val_images=splits.val.images.to(device), val_targets=val_targets,
        val_known=splits.val.known if spec.val_variant == "clean" else None,
        test_images=splits.test.images.to(device), test_labels=splits.test.labels, test_known=splits.test.known,
        mean=torch.tensor(splits.mean, device=device).view(shape) * 255,
        std=torch.tensor(splits.std, device=device).view(shape) * 255,
        train_flip=registry.dataset_class(spec.dataset).train_flip,
        label_checksum=observation.checksum(observed),
        expected_positives=float(splits.train.labels.sum(1).mean()), class_names=splits.class_names)


class Trainer:
    """Trains one RunSpec. `run()` returns the record fields of a finished run."""

    def __init__(self, spec: RunSpec, cache_dir: Path, *, progress: bool = True) -> None:
        self.spec = spec
        self.device = torch.device(spec.device)
        self.cuda = self.device.type == "cuda"
        self.progress = progress and sys.stderr.isatty()
        torch.manual_seed(spec.seed)
        self.data = prepare_data(spec, cache_dir, self.device)
        self.method: Method = registry.load_method(spec.method, spec.dataset, **spec.method_hparams()).to(self.device)
        backbone = build_backbone(spec.backbone, self.data.train_images.shape[1], spec.weights)
        self.model = CamClassifier(backbone, len(self.data.class_names), boost_alpha=spec.boost_alpha,
                                   boostlu_train=spec.boostlu_train, boostlu_infer=spec.boostlu_infer).to(self.device)
        self.model = self.model.to(memory_format=torch.channels_last)  # faster on CPU (oneDNN) and GPU alike
        self.state = TrainState(observed=self.data.train_targets, epochs=spec.epochs, dataset=spec.dataset,
                                expected_positives=self.data.expected_positives)
        self.method.setup(self.state)
        groups = self.model.param_groups(spec.lr, spec.head_lr_mult) + self.method.extra_param_groups(spec.lr)
        self.optimizer = torch.optim.Adam(groups, lr=spec.lr, foreach=True)
        self.shuffle = torch.Generator().manual_seed(spec.seed)

    def normalise(self, images: torch.Tensor, flip_mask: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 -> normalised float, optionally flipping the rows where `flip_mask` is True."""
        batch = (images.float() - self.data.mean) / self.data.std
        if flip_mask is not None:
            batch = torch.where(flip_mask.view(-1, 1, 1, 1), batch.flip(3), batch)
        return batch.contiguous(memory_format=torch.channels_last)

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
                logits = self.model(self.normalise(batch.to(self.device, non_blocking=True)))
            scores[indices.to(self.device)] = torch.sigmoid(logits.float())
        return scores

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training set; returns the mean batch loss.

        A non-finite loss is noted on the device (no host sync per batch) and raised as NumericalFault, naming the
        first bad batch, once the pass is over; so is a non-finite parameter (a non-finite gradient's mark).
        """
        self.model.train()
        images = self.data.train_images
        order = torch.randperm(len(images), generator=self.shuffle)
        if isinstance(images, torch.Tensor):
            order = order.to(self.device)
        num_batches = -(-len(order) // self.spec.batch_size)
        total = torch.zeros((), device=self.device)
        first_bad = torch.full((), -1, device=self.device)
        for number, (indices, batch) in enumerate(tqdm(
                batches(images, order, self.spec.batch_size), total=num_batches, leave=False, unit="batch",
                desc=f"{self.spec.variant} epoch {epoch}/{self.spec.epochs}", disable=not self.progress), 1):
            indices = indices.to(self.device)
            flip = None
            if self.data.train_flip:
                flip = (torch.rand(len(indices), generator=self.shuffle) < 0.5).to(self.device)
            with self.autocast():
                logits = self.model(self.normalise(batch.to(self.device, non_blocking=True), flip)).float()
            observed = self.state.observed[indices]
            loss = self.method.batch_loss(logits, observed, epoch=epoch, indices=indices)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.method.after_step(logits.detach(), observed, indices, epoch, self.state)
            loss = loss.detach()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss), number, first_bad)
            total += loss
        self.check_finite(epoch, int(first_bad), num_batches)
        return float(total) / num_batches

    def check_finite(self, epoch: int, first_bad_batch: int, num_batches: int) -> None:
        where = f"method {self.spec.variant}, dataset {self.spec.dataset}, seed {self.spec.seed}, epoch {epoch}"
        if first_bad_batch > 0:
            raise NumericalFault(f"non-finite loss in {where}, batch {first_bad_batch} of {num_batches}")
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise NumericalFault(f"non-finite parameters (a non-finite gradient) in {where}")

    def snapshot(self) -> dict[str, Any]:
        """Copy of everything needed to restore this epoch: model, method state, observed labels."""
        return copy.deepcopy({"model": self.model.state_dict(), "method": self.method.state_dict(),
                              "observed": self.state.observed})

    def run(self, *, resume_path: Path | None = None,
            on_epoch: Callable[[int, float, float], None] | None = None) -> dict[str, Any]:
        """Train, select the best epoch by validation mAP, evaluate test; return the record fields.

        resume_path: an epoch checkpoint file. If it exists, training continues after its epoch (with the same
            model, optimizer, method state, labels and random generators, so the result equals an uninterrupted
            run's); after every epoch it is rewritten atomically. The caller deletes it when the run is recorded.
        on_epoch: called as on_epoch(epoch, val_map, train_loss) after every validation; it may raise to stop
            the run (tuning prunes trials this way).
        Raises NumericalFault for a non-finite loss or parameter, UserError for CUDA running out of memory.
        """
        try:
            return self._run(resume_path, on_epoch)
        except torch.OutOfMemoryError:
            raise UserError(f"out of GPU memory with batch_size={self.spec.batch_size} on {self.device}: run again "
                            f"with a smaller one (e.g. --set batch_size={max(1, self.spec.batch_size // 2)}); the "
                            "batch size is never changed behind your back") from None

    def _run(self, resume_path: Path | None, on_epoch) -> dict[str, Any]:
        progress = {"epoch": 0, "curve": [], "best_val": -math.inf, "best_epoch": 0, "best": None, "seconds": 0.0}
        if resume_path is not None and resume_path.exists():
            progress = self.restore(resume_path)
        started = time.perf_counter() - progress["seconds"]
        for epoch in range(progress["epoch"] + 1, self.spec.epochs + 1):
            train_loss = self.train_epoch(epoch)
            self.method.end_of_epoch(epoch, self.state, lambda: self.predict(self.data.train_images))
            val_scores = self.predict(self.data.val_images).cpu().numpy()
            val_map = 100 * float(average_precision(val_scores, self.data.val_targets, self.data.val_known).mean())
            progress["curve"].append({"epoch": epoch, "train_loss": train_loss, "val_map": val_map})
            if val_map > progress["best_val"]:
                progress.update(best_val=val_map, best_epoch=epoch, best=self.snapshot())
            progress.update(epoch=epoch, seconds=time.perf_counter() - started)
            if resume_path is not None:
                self.save_progress(resume_path, progress)
            if on_epoch is not None:
                on_epoch(epoch, val_map, train_loss)
        self.checkpoint = progress["best"]
        self.model.load_state_dict(self.checkpoint["model"])
        test_scores = self.predict(self.data.test_images).cpu().numpy()
        per_class = average_precision(test_scores, self.data.test_labels, self.data.test_known)
        return {
            "val_map": progress["best_val"], "test_map": 100 * float(per_class.mean()),
            "best_epoch": progress["best_epoch"],
            "per_class_ap": {name: 100 * float(ap) for name, ap in zip(self.data.class_names, per_class, strict=True)},
            "curve": progress["curve"], "train_seconds": time.perf_counter() - started,
            "peak_memory_mb": peak_memory_mb(self.device), "label_checksum": self.data.label_checksum,
            "image_shape": list(self.data.train_images.shape[1:]), "determinism": determinism_note(self.device),
        }

    def save_progress(self, path: Path, progress: dict[str, Any]) -> None:
        """The epoch checkpoint: progress plus model, optimizer, method, labels and random generator states."""
        state = {**progress, "run_key_fields": self.spec.to_dict(), "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "method": self.method.state_dict(),
                 "observed": self.state.observed, "shuffle_rng": self.shuffle.get_state(),
                 "torch_rng": torch.get_rng_state()}
        atomic_torch_save(state, path)

    def restore(self, path: Path) -> dict[str, Any]:
        """Load an epoch checkpoint written by `save_progress` for this very spec (weights_only)."""
        state = load_checkpoint(path)
        if state.get("run_key_fields") != self.spec.to_dict():
            raise UserError(f"checkpoint {path} belongs to another run; delete it to start this run afresh")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.method.load_state_dict(state["method"])
        except (KeyError, RuntimeError, ValueError) as error:
            raise UserError(f"checkpoint {path} does not fit this model ({str(error).splitlines()[0]}); "
                            "delete it to start this run afresh") from None
        self.state.observed.copy_(state["observed"])
        self.shuffle.set_state(state["shuffle_rng"])
        torch.set_rng_state(state["torch_rng"])
        return {key: state[key] for key in ("epoch", "curve", "best_val", "best_epoch", "best", "seconds")}

    def save_checkpoint(self, path: Path) -> None:
        """Write the best epoch's checkpoint (tensors only, loadable with weights_only=True)."""
        atomic_torch_save(self.checkpoint, path)


class NumericalFault(Exception):
    """A non-finite loss or parameter: the run is recorded as failed, never as a result."""


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, partial)
    partial.replace(path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """torch.load with weights_only=True (no pickle of arbitrary objects); UserError naming an unreadable file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable checkpoint is the user's to remove
        raise UserError(f"cannot read checkpoint {path} ({type(error).__name__}); delete it to start afresh") from None


def determinism_note(device: torch.device) -> str:
    """What makes a run on `device` (not) bitwise reproducible."""
    if device.type == "cpu":
        return "deterministic: same spec, same numbers on the same CPU type and thread count"
    return ("not bitwise deterministic on CUDA: cuDNN algorithm choice, atomic adds in index/scatter backward "
            "(ROLE's estimates, LL-Cp), bf16 autocast; differences stay within seed noise")


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: GPU memory allocated on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
