"""The README's plugin examples, taken from its code blocks as a reader would copy them: the method of "Adding a
method" trains on the dataset of "Adding a dataset", through the command line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fixtures import my_images_folder, plugin_path
from test_contract import check_dataset_contract

from bench.cli.main import main
from bench.records import read_records

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_code(section: str) -> str:
    """The first Python code block under the README heading `## {section}`."""
    text = README.read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", body, re.DOTALL).group(1)


@pytest.fixture
def readme_plugins(tmp_path):
    """The README's two examples as plugin files on PAMLBENCH_PLUGIN_PATH."""
    root = tmp_path / "plugins"
    (root / "methods").mkdir(parents=True)
    (root / "datasets").mkdir()
    (root / "methods" / "readme_method.py").write_text(readme_code("Adding a method"))
    (root / "datasets" / "readme_dataset.py").write_text(readme_code("Adding a dataset"))
    with plugin_path(root):
        yield root


def test_the_readme_method_trains_on_the_readme_dataset(readme_plugins, tmp_path, capsys):
    data = my_images_folder(tmp_path / "data")
    assert main(["list", "methods"]) == 0 and main(["list", "datasets"]) == 0
    listed = capsys.readouterr().out
    assert "my-method" in listed and "   weight = 0.5" in listed and "my-images" in listed
    assert main(["data", "info", "my-images", "--data", str(data)]) == 0
    assert "96" in capsys.readouterr().out
    results, cache = tmp_path / "results", tmp_path / "cache"
    common = ["--dataset", "my-images", "--data", str(data), "--results", str(results), "--cache", str(cache),
              "--threads", "1", "--no-tracking", "--set", "epochs=3"]

    assert main(["run", "--method", "my-method", *common]) == 0
    assert main(["run", "--method", "my-method+boostlu", *common]) == 0
    first = read_records(results)
    assert [(r["spec"]["dataset"], r["spec"]["method"], r["status"]) for r in first] == \
        sorted([("my-images", "my-method", "done")] * 2, key=str)
    assert all(len(r["curve"]) == 3 and r["test_map"] > 50 for r in first)  # learnable: chance is about 40

    assert main(["run", "--method", "my-method", *common]) == 0  # recorded: nothing trained
    assert len(read_records(results)) == 2 and "recorded" in capsys.readouterr().out
    my_images_folder(data, seed=1)  # other data in the same file: its fingerprint, and so the run key, change
    assert main(["run", "--method", "my-method", *common]) == 0
    assert len(read_records(results)) == 3

    assert main(["run", "--method", "my-method", *common, "--set", "image_size=32"]) == 2
    assert "my-images are 16 px wide; image_size=32 is not supported" in capsys.readouterr().err
    assert len(read_records(results)) == 3


def test_the_readme_dataset_keeps_the_contract_every_dataset_is_tested_on(readme_plugins, capsys, cache_root,
                                                                          tmp_path):
    check_dataset_contract("my-images", capsys, cache_root, tmp_path)


def test_the_readme_quotes_the_leaderboard_s_findings_as_generated():
    """The README's result lines are the committed leaderboard's findings, word for word, and leaderboard.md is one
    screen: a finding the statistics no longer support cannot stay in the README."""
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    board = (root / "leaderboard.md").read_text()
    quoted = [line for line in readme.split("## What the records say")[1].split("\n## ")[0].splitlines()
              if line.startswith("- **")]
    generated = [line for line in board.splitlines() if line.startswith("- **")]
    assert quoted == generated and len(quoted) >= 3
    assert len(board.splitlines()) <= 60 and len(readme.splitlines()) <= 220
