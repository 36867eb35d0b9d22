"""Command-line argument types and checks: each turns a bad value into a one-line error naming the option.

`OneLineParser` makes argparse's own usage errors one line too. Numbers are checked against their real domain,
paths against their kind (a folder where a folder is expected, an output file whose folder exists), before any
command writes anything.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.spec import SEED_LIMIT


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message: str) -> None:
        raise UserError(f"{message} (see `{self.prog} --help`)")


def integer(name: str, low: int, high: int | None = None):
    """An argparse type: an integer in [low, high), written in ASCII digits, with a message naming the option."""
    def parse(text: str) -> int:
        try:
            if not text.strip().lstrip("+-").isascii():
                raise ValueError(text)
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
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"the heartbeat must be more than 0 and at most 3600 seconds, not {text}")
    return value


def gpu_share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gpus-per-cell must be a number, not {text!r}") from None
    if not 0 < value <= 8:
        raise argparse.ArgumentTypeError(f"--gpus-per-cell {text} must be more than 0 and at most 8")
    return value


def weights_argument(value: str) -> str:
    """`--weights`: 'imagenet' (the torch cache), 'none' (random initialisation) or an existing file."""
    if value in ("imagenet", "none"):
        return value
    if Path(value).is_dir():
        raise argparse.ArgumentTypeError(f"weights file {value} is a folder; give the state-dict file")
    if not Path(value).is_file():
        raise argparse.ArgumentTypeError(f"weights file {value} does not exist (give 'imagenet', 'none' or a file)")
    return value


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """['lr=0.01', 'epochs=3'] -> {'lr': '0.01', 'epochs': '3'} (values are typed by the hyperparameter)."""
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--set expects NAME=VALUE, got {item!r}")
        if name.strip() in values:
            raise UserError(f"--set {name.strip()} is given twice ({values[name.strip()]!r} and {value.strip()!r}); "
                            "give it once")
        values[name.strip()] = value.strip()
    return values


def folder_argument(path: str | None, option: str) -> str | None:
    """`path` if it is an existing folder (or None); UserError otherwise. A folder holding a `manifest.json` (a
    prepared dataset) must hold a readable one: a UTF-8 JSON object of at most 16 MiB."""
    if path is not None and not Path(path).is_dir():
        kind = "a file" if Path(path).exists() else "missing"
        raise UserError(f"{option} {path} is {kind}, not a folder")
    manifest = Path(path) / "manifest.json" if path is not None else None
    if manifest is not None and manifest.exists():
        check_manifest(manifest)
    return path


def check_manifest(path: Path) -> None:
    """UserError unless `path` is a regular file of at most 16 MiB holding a UTF-8 JSON object."""
    if not path.is_file() or path.stat().st_size > 16 * 2**20:
        raise UserError(f"malformed manifest {path}: not a regular file of at most 16 MiB; prepare the dataset again")
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:  # ValueError: JSON, huge integers
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise UserError(f"malformed manifest {path}: {reason}; prepare the dataset again") from None
    if not isinstance(manifest, dict):
        raise UserError(f"malformed manifest {path}: a JSON {type(manifest).__name__}, not an object; prepare the "
                        "dataset again")


def output_file(path: str, *, inputs: tuple[Path, ...] = (), results: Path | None = None) -> Path:
    """`path` as an output file: its folder must exist; it must not be a folder, a device, a FIFO or any other
    file that is not a regular one, nor one of the command's `inputs`, nor a file of the `results` folder that the
    command reads (a run record, a tuning result)."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name")
    if out.exists() and not out.is_file():
        raise UserError(f"--out {out} is not a regular file (a device, FIFO or socket); give a file name")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist; create it first")
    target = out.resolve()
    if any(target == Path(given).resolve() for given in inputs):
        raise UserError(f"--out {out} is one of this command's inputs; write the output elsewhere")
    if results is not None and target.suffix == ".json" and results.resolve() in target.parents:
        raise UserError(f"--out {out} is in the results folder {results}, where run records live; write it "
                        "elsewhere")
    return out


def input_file(path: Path, what: str) -> Path:
    """`path` as an input file to read: it must be a regular file (a FIFO would block the command forever)."""
    if path.exists() and not path.is_file() and not path.is_dir():
        raise UserError(f"{what} {path} is not a regular file (a device, FIFO or socket)")
    return path


def folder_or_new(path: str, option: str) -> Path:
    """`path` as an absolute folder that exists or can be created (it is created on the worker nodes)."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{option} {path} is a file, not a folder")
    return folder.resolve()


def cluster_address(text: str) -> str:
    """An argparse type for --cluster: 'auto', ray://HOST:PORT, or HOST:PORT checked by `head_address`."""
    if text != "auto" and not text.startswith("ray://"):
        from bench.execute.cluster import head_address

        try:
            head_address(text)
        except UserError as error:
            raise argparse.ArgumentTypeError(str(error).removeprefix(f"--cluster {text}: ")) from None
    return text
