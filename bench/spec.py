"""RunSpec: the single, frozen description of one training run, and its run key.

The run key is a hash of everything that changes the result: every field except `data_dir` (a location, not
content), plus the run's identity (`RunSpec.identity`): the dataset's content fingerprint, the code version
(`bench.versions.code_version`), the torch version and the numerics descriptor (`bench.numerics`: instruction set and
thread count on CPU, GPU model on CUDA). Same spec, code and numerics give the same key; any change gives a different
key. A finished run is found by its key and never trained twice.

Hyperparameters: the trainer's are declared once, in TRAINING_HPARAMS, and their per-dataset defaults live in the
dataset plugin (`Dataset.defaults`); a method's are declared in its plugin, with per-dataset defaults next to them
(`Hyperparam.per_dataset`).
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
from bench.numerics import numerics
from bench.observation import COLE_SEED, parse_protocol
from bench.versions import code_version

SEED_LIMIT = 2**32
"""Seeds and label seeds are in [0, 2**32): what numpy's RandomState and torch's generators both accept."""

TRAINING_HPARAMS: dict[str, Hyperparam] = {
    "lr": Hyperparam(1e-3, "Adam learning rate of the backbone", low=0, low_open=True, high=1, search_around=10.0,
                     log=True),
    "lr_schedule": Hyperparam("constant", "learning-rate schedule over the epochs: constant, or cosine decay",
                              choices=("constant", "cosine")),
    "batch_size": Hyperparam(32, "training batch size", low=1, high=4096),
    "epochs": Hyperparam(5, "training epochs", low=1, high=1000),
    "head_lr_mult": Hyperparam(1.0, "learning-rate multiplier of the CAM head (LL/BG use 10)", low=0,
                               low_open=True, high=1000),
    "boost_alpha": Hyperparam(5.0, "BoostLU alpha (>= 1; only for variants with BoostLU)", low=1, high=100,
                              search=(1.0, 10.0)),
    "freeze_backbone": Hyperparam(False, "train the CAM head alone on cached pooled features of the frozen backbone "
                                  "(Cole et al.'s linear setting; no BoostLU, no augmentation)"),
    "li_epochs": Hyperparam(25, "LinearInit: epochs of the linear stage (only for +li variants)", low=1, high=1000),
    "li_lr": Hyperparam(1e-4, "LinearInit: learning rate of the linear stage (only for +li variants)", low=0,
                        low_open=True, high=1, log=True),
    "image_size": Hyperparam(0, "image side in pixels (0 = the dataset's default, 448 for the real datasets)", low=0,
                             high=2048),
    "backbone": Hyperparam("small-cnn", "backbone network", choices=("small-cnn", "resnet50", "resnet101")),
}
"""Hyperparameters of the trainer (as opposed to the method); their per-dataset defaults come from the dataset
plugin's `defaults`."""

BOOSTLU_ONLY = ("boost_alpha",)
"""Trainer hyperparameters that exist only for variants with BoostLU (absent from the spec and key of the others)."""
LINEAR_INIT_ONLY = ("li_epochs", "li_lr")
"""Trainer hyperparameters that exist only for LinearInit variants (`+li`)."""
LINEAR_INIT = "+li"
"""The variant suffix of LinearInit (Cole et al.): a linear stage on frozen features, then end-to-end training from
its classifier."""


@dataclass(frozen=True)
class RunSpec:
    """One training run. Build it with `make_spec`, which fills in and validates defaults: the trainer settings'
    defaults live in TRAINING_HPARAMS and the dataset plugins, never here (the BoostLU and LinearInit settings are
    None for variants without them)."""

    dataset: str
    method: str
    seed: int
    lr: float
    lr_schedule: str
    batch_size: int
    epochs: int
    head_lr_mult: float
    freeze_backbone: bool
    image_size: int
    backbone: str
    hparams: tuple[tuple[str, Any], ...] = ()
    boost_alpha: float | None = None
    li_epochs: int | None = None
    li_lr: float | None = None
    boostlu_train: bool = False
    boostlu_infer: bool = False
    linear_init: bool = False
    weights: str | None = None
    protocol: str = "single-positive"
    label_seed: int = COLE_SEED
    device: str = "cpu"
    recipe: str = "defaults"
    data_dir: str | None = None

    @property
    def variant(self) -> str:
        """The leaderboard name: method, plus '+li' (LinearInit), '+boostlu' (train and inference), '+boostlu-train'
        or '+boostlu-infer'."""
        name = self.method + (LINEAR_INIT if self.linear_init else "")
        if self.boostlu_train and self.boostlu_infer:
            return f"{name}+boostlu"
        if self.boostlu_train:
            return f"{name}+boostlu-train"
        if self.boostlu_infer:
            return f"{name}+boostlu-infer"
        return name

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

    def identity(self, data_cache: Path) -> dict[str, Any]:
        """What besides the spec decides the result: code version, data fingerprint, torch version, numerics."""
        import torch

        method = registry.method_class(self.method)
        dataset = registry.dataset_class(self.dataset)
        return {"code_version": code_version(method, dataset),
                "data_fingerprint": dataset().fingerprint(Path(self.data_dir) if self.data_dir else None, data_cache),
                "torch": torch.__version__.split("+")[0], "numerics": numerics(self.device)}

    def key(self, identity: dict[str, Any]) -> str:
        """The run key (16 hex digits) of this spec with `identity` (see `identity`)."""
        fields = {k: v for k, v in self.to_dict().items() if k != "data_dir"}
        blob = json.dumps({**fields, **identity}, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def parse_variant(variant: str) -> tuple[str, bool, bool]:
    """'ll-r+boostlu' -> ('ll-r', True, True); '+boostlu-train' / '+boostlu-infer' set one flag; a LinearInit
    suffix is dropped ('role+li' -> ('role', False, False); see `is_linear_init`)."""
    flags = {"": (False, False), "+boostlu": (True, True), "+boostlu-train": (True, False),
             "+boostlu-infer": (False, True)}
    for suffix in ("+boostlu-train", "+boostlu-infer", "+boostlu"):
        if variant.endswith(suffix):
            return (variant[: -len(suffix)].removesuffix(LINEAR_INIT), *flags[suffix])
    return variant.removesuffix(LINEAR_INIT), False, False


def is_linear_init(variant: str) -> bool:
    """True for a LinearInit variant ('role+li')."""
    return LINEAR_INIT + "+" in variant + "+"


def check_seed(name: str, value: Any) -> int:
    """`value` as a seed in [0, 2**32); UserError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise UserError(f"{name} {value!r} must be an integer in [0, {SEED_LIMIT})")
    return value


def trainer_hparams(boosted: bool, linear_init: bool) -> dict[str, Hyperparam]:
    """The trainer hyperparameters a variant has: boost_alpha only with BoostLU, the LinearInit stage's only with
    +li."""
    return {name: param for name, param in TRAINING_HPARAMS.items()
            if (boosted or name not in BOOSTLU_ONLY) and (linear_init or name not in LINEAR_INIT_ONLY)}


def variant_trainer_hparams(variant: str) -> dict[str, Hyperparam]:
    """`trainer_hparams` of the variant called `variant`."""
    _, boost_train, boost_infer = parse_variant(variant)
    return trainer_hparams(boost_train or boost_infer, is_linear_init(variant))


def trainer_defaults(dataset: str) -> dict[str, Any]:
    """The trainer hyperparameters' defaults on `dataset` (its plugin's `defaults` over the global ones)."""
    declared = registry.dataset_class(dataset).defaults
    return {name: declared.get(name, param.default) for name, param in TRAINING_HPARAMS.items()}


def make_spec(dataset: str, variant: str, seed: int, *, overrides: dict[str, Any] | None = None,
              protocol: str = "single-positive", label_seed: int = COLE_SEED, device: str = "cpu",
              data_dir: str | None = None, weights: str | None = None, strict: bool = True,
              recipe: str = "defaults") -> RunSpec:
    """A validated RunSpec for `variant` on `dataset`.

    `overrides` may hold trainer hyperparameters (TRAINING_HPARAMS) and the method's own. With `strict` (one run),
    a name the variant does not use is a UserError; without it (a grid's overrides, shared by every variant), such
    names are skipped for that variant, e.g. `boost_alpha` for variants without BoostLU or `delta_rel` for methods
    other than LL. `recipe` names where the values came from (`bench.recipes`); it is part of the spec, so that a
    row of one recipe never reuses a record of another.
    """
    method_name, boost_train, boost_infer = parse_variant(variant)
    linear_init = is_linear_init(variant)
    if linear_init and (boost_train or boost_infer):
        raise UserError(f"variant {variant!r}: LinearInit and BoostLU are not combined; use one of them")
    method_cls = registry.method_class(method_name)
    dataset_cls = registry.dataset_class(dataset)
    check_seed("seed", seed)
    check_seed("label seed", label_seed)
    parse_protocol(protocol)
    if dataset_cls.needs_data_dir and not data_dir:
        raise UserError(f"dataset {dataset!r} needs --data DIR (the folder `pamlbench data prepare` wrote)")
    if not dataset_cls.needs_data_dir and data_dir and not dataset_cls.takes_data_dir:
        raise UserError(f"dataset {dataset!r} is built in and takes no --data folder")
    overrides = dict(overrides or {})
    boosted = boost_train or boost_infer
    unused = [name for name in overrides if (name in BOOSTLU_ONLY and not boosted)
              or (name in LINEAR_INIT_ONLY and not linear_init)
              or (name not in TRAINING_HPARAMS and name not in method_cls.hparams)]
    if unused and strict:
        if unused[0] in BOOSTLU_ONLY:
            raise UserError(f"hyperparameter {unused[0]} applies only to variants with BoostLU, not {variant!r}")
        if unused[0] in LINEAR_INIT_ONLY:
            raise UserError(f"hyperparameter {unused[0]} applies only to LinearInit variants (+li), not {variant!r}")
        known = ", ".join(sorted(method_cls.hparams)) or "none"
        raise UserError(f"method {method_name!r} has no hyperparameter {unused[0]!r} (it has: {known}; and the "
                        f"trainer's: {', '.join(TRAINING_HPARAMS)})")
    given = {name: value for name, value in overrides.items() if name not in unused}
    declared = trainer_hparams(boosted, linear_init)
    defaults = trainer_defaults(dataset)
    trainer_given = {name: given.pop(name) for name in list(given) if name in declared}
    trainer = resolve(declared, {**{k: defaults[k] for k in declared}, **trainer_given}, dataset,
                      owner="the trainer")
    method_hparams = resolve(method_cls.hparams, given, dataset, owner=f"method {method_name!r}")
    method_cls.check_schedule(method_hparams, trainer["epochs"])
    if trainer["freeze_backbone"] and (boosted or linear_init):
        raise UserError(f"freeze_backbone trains on pooled features: it takes no BoostLU (which needs the feature "
                        f"maps) and no LinearInit (whose second stage trains the backbone), not {variant!r}")
    if weights is None and trainer["backbone"] == defaults["backbone"]:
        weights = dataset_cls.default_weights
    return RunSpec(dataset=dataset, method=method_name, seed=seed, hparams=tuple(sorted(method_hparams.items())),
                   boostlu_train=boost_train, boostlu_infer=boost_infer, linear_init=linear_init, weights=weights,
                   protocol=protocol, label_seed=label_seed, device=device, recipe=recipe, data_dir=data_dir, **trainer)
