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
import resource
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bench import observation, registry
from bench.dataset import Splits
from bench.method import Method, TrainState
from bench.metrics import average_precision
from bench.model import CamClassifier, build_backbone
from bench.spec import RunSpec

EVAL_BATCH = 512


def resolve_device(requested: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda' without a GPU is an error."""
    from bench.errors import UserError

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for, but no CUDA GPU is visible; use --device cpu or auto")
    if requested not in ("cpu", "cuda"):
        raise UserError(f"unknown device {requested!r}; use auto, cpu or cuda")
    return requested


@lru_cache(maxsize=4)
def load_splits(dataset: str, data_dir: str | None, cache_dir: str) -> Splits:
    """The dataset's splits, loaded once per process (a benchmark trains many runs on the same data)."""
    plugin = registry.load_dataset(dataset)
    return plugin.load(Path(data_dir) if data_dir else None, Path(cache_dir))


@dataclass
class RunData:
    """Everything the training loop reads, already on the device."""

    train_images: torch.Tensor
    train_targets: torch.Tensor  # what the method sees: observed labels, or full labels for the oracle
    val_images: torch.Tensor
    val_targets: np.ndarray
    test_images: torch.Tensor
    test_labels: np.ndarray
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
    splits = load_splits(spec.dataset, spec.data_dir, str(cache_dir))
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
        test_images=splits.test.images.to(device), test_labels=splits.test.labels,
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
        for start in range(0, len(images), EVAL_BATCH):
            with self.autocast():
                logits = self.model(self.normalise(images[start:start + EVAL_BATCH]))
            scores[start:start + EVAL_BATCH] = torch.sigmoid(logits.float())
        return scores

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training set; returns the mean batch loss."""
        self.model.train()
        images = self.data.train_images
        order = torch.randperm(len(images), generator=self.shuffle).to(self.device)
        batches = range(0, len(order), self.spec.batch_size)
        total = torch.zeros((), device=self.device)
        for start in tqdm(batches, desc=f"{self.spec.variant} epoch {epoch}/{self.spec.epochs}", leave=False,
                          disable=not self.progress, unit="batch"):
            indices = order[start:start + self.spec.batch_size]
            flip = None
            if self.data.train_flip:
                flip = (torch.rand(len(indices), generator=self.shuffle) < 0.5).to(self.device)
            with self.autocast():
                logits = self.model(self.normalise(images[indices], flip)).float()
            observed = self.state.observed[indices]
            loss = self.method.batch_loss(logits, observed, epoch=epoch, indices=indices)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.method.after_step(logits.detach(), observed, indices, epoch, self.state)
            total += loss.detach()
        return float(total) / len(batches)

    def snapshot(self) -> dict[str, Any]:
        """Copy of everything needed to restore this epoch: model, method state, observed labels."""
        return copy.deepcopy({"model": self.model.state_dict(), "method": self.method.state_dict(),
                              "observed": self.state.observed})

    def run(self) -> dict[str, Any]:
        """Train, select the best epoch by validation mAP, evaluate test; return the record fields."""
        started = time.perf_counter()
        curve, best_val, best = [], -math.inf, None
        for epoch in range(1, self.spec.epochs + 1):
            train_loss = self.train_epoch(epoch)
            self.method.end_of_epoch(epoch, self.state, lambda: self.predict(self.data.train_images))
            val_scores = self.predict(self.data.val_images).cpu().numpy()
            val_map = 100 * float(average_precision(val_scores, self.data.val_targets).mean())
            curve.append({"epoch": epoch, "train_loss": train_loss, "val_map": val_map})
            if val_map > best_val:
                best_val, best = val_map, (epoch, self.snapshot())
        best_epoch, checkpoint = best
        self.model.load_state_dict(checkpoint["model"])
        test_scores = self.predict(self.data.test_images).cpu().numpy()
        per_class = average_precision(test_scores, self.data.test_labels)
        self.checkpoint = checkpoint
        return {
            "val_map": best_val, "test_map": 100 * float(per_class.mean()), "best_epoch": best_epoch,
            "per_class_ap": {name: 100 * float(ap) for name, ap in zip(self.data.class_names, per_class, strict=True)},
            "curve": curve, "train_seconds": time.perf_counter() - started,
            "peak_memory_mb": peak_memory_mb(self.device),
            "label_checksum": self.data.label_checksum,
        }

    def save_checkpoint(self, path: Path) -> None:
        """Write the best epoch's checkpoint (tensors only, loadable with weights_only=True)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        torch.save(self.checkpoint, partial)
        partial.replace(path)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory in MiB: GPU memory allocated on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
