"""Every message that quotes what a user typed (a path, a variant, a --set name, a grid-file value, a plugin path, a
record's field) stays one line: a name holding a newline, a carriage return, an ANSI escape sequence or a NUL is
shown escaped, never printed raw, the command exits with status 2 and the project folder is unchanged. And a run
record holding a number outside what a record can hold is refused as corrupt in one line."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from test_bad_input import run_case, snapshot

from bench import registry

NASTY = {"newline": "\n", "carriage return": "\r", "ANSI colour": "\x1b[31m", "NUL": "\x00"}


def record_path() -> Path:
    return sorted(Path("results").glob("*.json"))[0]


def grid_with(value: str) -> None:
    Path("nasty.toml").write_text("datasets = ['digits-mosaic']\nseeds = [0]\ndevice = 'cpu'\nvariants = "
                                  + json.dumps([value]) + "\n")


def plugin_folder(name: str) -> None:
    folder = Path(name) / "methods"
    folder.mkdir(parents=True)
    (folder / "broken.py").write_text("raise RuntimeError('broken on purpose')\n")
    os.environ["PAMLBENCH_PLUGIN_PATH"] = str(Path(name).resolve())
    registry.methods.cache_clear()


def record_field(value: str) -> None:
    """A class name (a key the record's per-class AP is keyed by) holding `value`, with an AP out of range."""
    record = json.loads(record_path().read_text())
    record["per_class_ap"][value] = 150.0
    record_path().write_text(json.dumps(record))


INPUTS = {  # where the name goes -> (lay out with the name, the command with the name, the message around it)
    "--out path": (None, lambda n: ["report", "--out", f"b{n}x/board.md"], "does not exist"),
    "--results path": (None, lambda n: ["report", "--results", f"r{n}x"], "results folder r"),
    "--config path": (None, lambda n: ["bench", "--config", f"g{n}x.toml"], "benchmark file g"),
    "--weights path": (None, lambda n: ["run", "--method", "an", "--weights", f"w{n}x", "--set", "epochs=1"],
                       "weights file w"),
    "--data path": (None, lambda n: ["bench", "--config", "grid.toml", "--data", f"d{n}x", "--plan"], "--data d"),
    "variant": (None, lambda n: ["bench", "--config", "grid.toml", "--variants", f"an{n}x", "--plan"],
                "unknown method 'an"),
    "--set name": (None, lambda n: ["bench", "--config", "grid.toml", "--set", f"l{n}r=0.1", "--plan"], "--set l"),
    "dataset": (None, lambda n: ["data", "info", f"voc{n}x"], "unknown dataset 'voc"),
    "grid-file value": (lambda n: grid_with(f"an{n}x"), lambda n: ["bench", "--config", "nasty.toml", "--plan"],
                        "an"),
    "plugin path": (lambda n: plugin_folder(f"plugins{n}x"), lambda n: ["list", "methods"], "plugin file "),
    "record field": (lambda n: record_field(f"class{n}x"), lambda n: ["report", "--out", "board.md"],
                     "field 'per_class_ap.class"),
}


@pytest.fixture
def clean_plugins():
    saved = os.environ.get("PAMLBENCH_PLUGIN_PATH")
    yield
    if saved is None:
        os.environ.pop("PAMLBENCH_PLUGIN_PATH", None)
    else:
        os.environ["PAMLBENCH_PLUGIN_PATH"] = saved
    registry.methods.cache_clear()


@pytest.mark.parametrize("character", list(NASTY))
@pytest.mark.parametrize("where", list(INPUTS))
def test_a_name_with_control_characters_is_quoted_escaped_in_one_line(where, character, project, capsys,
                                                                      clean_plugins):
    lay_out, command, context = INPUTS[where]
    nasty = NASTY[character]
    if nasty == "\x00" and where in ("plugin path",):
        pytest.skip("no file system can hold a NUL in a folder name")
    if lay_out:
        lay_out(nasty)
    before = snapshot(project)
    err = run_case(command(nasty), None, capsys)  # exit 2, one line, the error prefix once
    assert not any(char in err.rstrip("\n") for char in NASTY.values()), repr(err)
    escaped = nasty.encode("unicode_escape").decode("ascii")
    assert escaped in err, err
    assert context in err or (nasty == "\x00" and "holds a NUL character; no name or path can" in err), err
    assert snapshot(project) == before


NUMBERS = {
    "an integer of 5,000 digits": lambda text: text.replace('"seed": 0', '"seed": ' + "9" * 5000, 1),
    "a float that overflows": lambda text: re.sub(r'"best_epoch": \d+', '"best_epoch": 1e999999', text, count=1),
    "a huge float string as a metric": lambda text: json.dumps({**json.loads(text), "test_map": "1e999999"}),
    "a number where a string belongs": lambda text: json.dumps(
        {**json.loads(text), "spec": {**json.loads(text)["spec"], "dataset": 5}}),
}


@pytest.mark.parametrize("case", list(NUMBERS))
def test_a_record_with_a_number_out_of_range_is_refused_in_one_line(case, project, capsys):
    text = record_path().read_text()
    changed = NUMBERS[case](text)
    assert changed != text
    record_path().write_text(changed)
    before = snapshot(project)
    err = run_case(["report", "--out", "board.md"], None, capsys)
    assert f"corrupt results file {record_path()}" in err, err
    assert snapshot(project) == before
