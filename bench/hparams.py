"""Hyperparameter declarations: a default (optionally per dataset), the valid range, and the tuning range.

A method plugin declares its hyperparameters next to its loss, e.g.::

    hparams = {"ls_coef": Hyperparam(0.1, low=0.0, high=0.5, search=(0.01, 0.3), help="smoothing")}

`resolve` turns user-given values into a complete, validated, typed dict; it raises `UserError` with one line naming
the hyperparameter for a wrong type or a value outside the valid range.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.errors import UserError


@dataclass(frozen=True)
class Hyperparam:
    """One hyperparameter.

    default:      the value used when none is given (its Python type is the hyperparameter's type).
    per_dataset:  dataset name -> default, overriding `default` on that dataset (e.g. EM's alpha per dataset).
    low, high:    inclusive valid range for numbers; None means unbounded on that side.
    low_open:     if True the lower bound itself is not valid (e.g. a learning rate must be > 0).
    high_open:    if True the upper bound itself is not valid (e.g. delta_rel < 1).
    search:       (low, high) range explored by tuning; None means the value is not tuned.
    search_around: a factor f: tuning explores [d / f, d * f] around the dataset's default d (on a log scale), so
                  that the range follows the dataset (a learning rate of 1e-5 on VOC, 3e-3 on the mosaics).
    log:          search on a log scale.
    choices:      allowed values for strings.
    """

    default: Any
    help: str = ""
    per_dataset: Mapping[str, Any] = field(default_factory=dict)
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    search: tuple[float, float] | None = None
    search_around: float | None = None
    log: bool = False
    choices: tuple[str, ...] | None = None

    def default_for(self, dataset: str | None) -> Any:
        """The default value on `dataset` (its per-dataset value if declared)."""
        if dataset is not None and dataset in self.per_dataset:
            return self.per_dataset[dataset]
        return self.default

    def search_range(self, default: Any) -> tuple[float, float] | None:
        """The tuning range given the default `default` on the dataset at hand; None if not tuned."""
        if self.search_around is not None:
            return (default / self.search_around, default * self.search_around)
        return self.search

    def coerce(self, name: str, value: Any) -> Any:
        """Return `value` converted to this hyperparameter's type and checked against its range."""
        kind = type(self.default)
        if kind is bool:
            value = _as_bool(name, value)
        elif kind in (int, float):
            value = _as_number(name, value, kind)
            self._check_range(name, value)
        elif kind is str:
            value = str(value)
            if self.choices is not None and value not in self.choices:
                raise UserError(f"hyperparameter {name}={value!r} is not one of {', '.join(self.choices)}")
        return value

    def _check_range(self, name: str, value: float) -> None:
        if not math.isfinite(value):
            raise UserError(f"hyperparameter {name}={value} must be a finite number")
        too_low = self.low is not None and (value < self.low or (self.low_open and value == self.low))
        too_high = self.high is not None and (value > self.high or (self.high_open and value == self.high))
        if too_low or too_high:
            raise UserError(f"hyperparameter {name}={value} is out of range: it must be in {self.describe_range()}")

    def describe_range(self) -> str:
        """The valid range in interval notation, e.g. '(0, 1)' or '[1, inf)'."""
        left = "(" if self.low is None or self.low_open else "["
        right = ")" if self.high is None or self.high_open else "]"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{left}{low}, {high}{right}"


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise UserError(f"hyperparameter {name}={value!r} must be true or false")


def _as_number(name: str, value: Any, kind: type) -> float | int:
    if isinstance(value, bool):
        raise UserError(f"hyperparameter {name}={value!r} must be a number, not a boolean")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"hyperparameter {name}={value!r} must be a number") from None
    if kind is int:
        if not number.is_integer():
            raise UserError(f"hyperparameter {name}={value!r} must be an integer")
        return int(number)
    return number


def resolve(declared: Mapping[str, Hyperparam], given: Mapping[str, Any], dataset: str | None,
            owner: str) -> dict[str, Any]:
    """Complete `given` with defaults for `dataset` and validate every value.

    Raises UserError for a name that `owner` does not declare, listing the names it does.
    """
    unknown = sorted(set(given) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise UserError(f"{owner} has no hyperparameter {unknown[0]!r} (it has: {known})")
    values = {}
    for name, param in declared.items():
        raw = given[name] if name in given else param.default_for(dataset)
        values[name] = param.coerce(name, raw)
    return values
