"""RunSpec: the single, frozen description of one training run, and its run key.

The run key is a hash of everything that changes the result: every field except `data_dir` (a location, not
content), plus the dataset's content fingerprint, the code version (`bench.versions.code_version`) and the torch
version. Same spec and same code give the same key; any change gives a different key. A finished run is found by its
key and never trained twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import registry
from bench.errors import UserError
from bench.hparams import Hyperparam, resolve
from bench.observation import COLE_SEED, parse_protocol
from bench.versions import code_version

VAL_VARIANTS = ("clean", "observed")

TRAINING_HPARAMS: dict[str, Hyperparam] = {
    "lr": Hyperparam(1e-3, "Adam learning rate of the backbone", low=0, low_open=True, high=1,
                     search=(1e-4, 1e-2), log=True),
    "batch_size": Hyperparam(32, "training batch size", low=1, high=4096),
    "epochs": Hyperparam(5, "training epochs", low=1, high=1000),
    "head_lr_mult": Hyperparam(1.0, "learning-rate multiplier of the CAM head (LL/BG use 10)", low=0,
                               low_open=True, high=1000),
    "boost_alpha": Hyperparam(5.0, "BoostLU alpha (>= 1)", low=1, high=100, search=(1.0, 10.0)),
    "image_size": Hyperparam(0, "image side in pixels (0 = the dataset's default, 448 for the real datasets)", low=0,
                             high=2048),
}
"""Hyperparameters of the trainer (as opposed to the method); their defaults come from the dataset plugin."""


@dataclass(frozen=True)
class RunSpec:
    """One training run. Build it with `make_spec`, which fills in and validates defaults."""

    dataset: str
    method: str
    seed: int
    hparams: tuple[tuple[str, Any], ...] = ()
    lr: float = 1e-3
    batch_size: int = 32
    epochs: int = 5
    head_lr_mult: float = 1.0
    boost_alpha: float = 5.0
    image_size: int = 0
    boostlu_train: bool = False
    boostlu_infer: bool = False
    backbone: str = "small-cnn"
    weights: str | None = None
    protocol: str = "single-positive"
    label_seed: int = COLE_SEED
    val_variant: str = "clean"
    device: str = "cpu"
    data_dir: str | None = None

    @property
    def variant(self) -> str:
        """The leaderboard name: method, plus '+boostlu' (train and inference), '+boostlu-train' or '+boostlu-infer'."""
        if self.boostlu_train and self.boostlu_infer:
            return f"{self.method}+boostlu"
        if self.boostlu_train:
            return f"{self.method}+boostlu-train"
        if self.boostlu_infer:
            return f"{self.method}+boostlu-infer"
        return self.method

    def method_hparams(self) -> dict[str, Any]:
        return dict(self.hparams)

    def to_dict(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        fields["hparams"] = dict(self.hparams)
        return fields

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> RunSpec:
        fields = dict(fields)
        fields["hparams"] = tuple(sorted(fields.get("hparams", {}).items()))
        return cls(**fields)

    def key(self, cache_dir: Path) -> str:
        """The run key (16 hex digits)."""
        import torch

        method = registry.method_class(self.method)
        dataset = registry.dataset_class(self.dataset)
        data_dir = Path(self.data_dir) if self.data_dir else None
        identity = {k: v for k, v in self.to_dict().items() if k != "data_dir"}
        identity["code_version"] = code_version(method, dataset)
        identity["data_fingerprint"] = dataset().fingerprint(data_dir, cache_dir)
        identity["torch"] = torch.__version__.split("+")[0]
        blob = json.dumps(identity, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def parse_variant(variant: str) -> tuple[str, bool, bool]:
    """'ll-r+boostlu' -> ('ll-r', True, True); '+boostlu-train' / '+boostlu-infer' set one flag."""
    flags = {"": (False, False), "+boostlu": (True, True), "+boostlu-train": (True, False),
             "+boostlu-infer": (False, True)}
    for suffix in ("+boostlu-train", "+boostlu-infer", "+boostlu"):
        if variant.endswith(suffix):
            return (variant[: -len(suffix)], *flags[suffix])
    return variant, False, False


def make_spec(dataset: str, variant: str, seed: int, *, overrides: dict[str, Any] | None = None,
              protocol: str = "single-positive", label_seed: int = COLE_SEED, val_variant: str = "clean",
              device: str = "cpu", data_dir: str | None = None, weights: str | None = None) -> RunSpec:
    """A validated RunSpec for `variant` on `dataset`.

    `overrides` may hold trainer hyperparameters (lr, batch_size, epochs, head_lr_mult, boost_alpha, backbone) and
    the method's own hyperparameters; anything else is a UserError.
    """
    method_name, boost_train, boost_infer = parse_variant(variant)
    method_cls = registry.method_class(method_name)
    dataset_cls = registry.dataset_class(dataset)
    overrides = dict(overrides or {})
    parse_protocol(protocol)
    if val_variant not in VAL_VARIANTS:
        raise UserError(f"unknown validation variant {val_variant!r}; use one of {', '.join(VAL_VARIANTS)}")
    if dataset_cls.needs_data_dir and not data_dir:
        raise UserError(f"dataset {dataset!r} needs --data DIR (the folder `pamlbench data prepare` wrote)")
    default_backbone = dataset_cls.defaults.get("backbone", "small-cnn")
    backbone = str(overrides.pop("backbone", default_backbone))
    if weights is None and backbone == default_backbone:
        weights = dataset_cls.defaults.get("weights")
    trainer_given = {k: overrides.pop(k) for k in list(overrides) if k in TRAINING_HPARAMS}
    trainer_defaults = {k: dataset_cls.defaults.get(k, p.default) for k, p in TRAINING_HPARAMS.items()}
    trainer = resolve(TRAINING_HPARAMS, {**trainer_defaults, **trainer_given}, dataset, owner="the trainer")
    method_hparams = resolve(method_cls.hparams, overrides, dataset, owner=f"method {method_name!r}")
    if not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed {seed!r} must be a non-negative integer")
    return RunSpec(dataset=dataset, method=method_name, seed=seed, hparams=tuple(sorted(method_hparams.items())),
                   boostlu_train=boost_train, boostlu_infer=boost_infer, backbone=backbone, weights=weights,
                   protocol=protocol, label_seed=label_seed, val_variant=val_variant, device=device,
                   data_dir=data_dir, **trainer)
