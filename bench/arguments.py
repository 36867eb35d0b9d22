"""Command-line argument types and checks: each turns a bad value into a one-line error naming the option.

`OneLineParser` makes argparse's own usage errors one line too. Numbers are checked against their real domain,
paths against their kind (a folder where a folder is expected, an output file whose folder exists), before any
command writes anything.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.spec import SEED_LIMIT


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message: str) -> None:
        raise UserError(f"{message} (see `{self.prog} --help`)")


def integer(name: str, low: int, high: int | None = None):
    """An argparse type: an integer in [low, high), with a message naming the option."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, not {text!r}") from None
        if value < low or (high is not None and value >= high):
            bound = f"in [{low}, {high})" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{name} {value} must be {bound}")
        return value
    return parse


SEED = integer("a seed", 0, SEED_LIMIT)


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"the heartbeat must be a number of seconds, not {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the heartbeat must be more than 0 seconds, not {text}")
    return value


def gpu_share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gpus-per-cell must be a number, not {text!r}") from None
    if not 0 < value <= 8:
        raise argparse.ArgumentTypeError(f"--gpus-per-cell {text} must be more than 0 and at most 8")
    return value


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """['lr=0.01', 'epochs=3'] -> {'lr': '0.01', 'epochs': '3'} (values are typed by the hyperparameter)."""
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--set expects NAME=VALUE, got {item!r}")
        values[name.strip()] = value.strip()
    return values


def folder_argument(path: str | None, option: str) -> str | None:
    """`path` if it is an existing folder (or None); UserError otherwise."""
    if path is not None and not Path(path).is_dir():
        kind = "a file" if Path(path).exists() else "missing"
        raise UserError(f"{option} {path} is {kind}, not a folder")
    return path


def output_file(path: str) -> Path:
    """`path` as an output file: its folder must exist and it must not be a folder."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist; create it first")
    return out


def folder_or_new(path: str, option: str) -> Path:
    """`path` as an absolute folder that exists or can be created (it is created on the worker nodes)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{option} {path} is a file, not a folder")
    return folder.resolve()
