"""The tuned-observed recipe: studies scored on observed-label validation mAP (no clean label used), saved under
their own name, and the cells that run their best values."""

from __future__ import annotations

import json

import pytest
from fixtures import write_grid

from bench.cli import main
from bench.records import read_records


@pytest.mark.slow
def test_tune_and_bench_the_tuned_observed_recipe(tmp_path, monkeypatch, mini_mosaic, cache_root, capsys):
    monkeypatch.chdir(tmp_path)
    write_grid(tmp_path / "grid.toml", ["an"], [0], epochs=1)
    common = ["--config", "grid.toml", "--cache", str(cache_root), "--no-tracking", "--jobs", "1", "--threads", "1"]
    assert main(["tune", *common, "--recipe", "tuned-observed", "--n-trials", "2"]) == 0
    [path] = (tmp_path / "results" / "tuned").glob("*.json")
    summary = json.loads(path.read_text())
    assert summary["study"].endswith("/an/small-cnn/1ep/observed") and path.name.endswith("_1ep_observed.json")
    assert summary["budget"]["objective"] == "observed"  # the trials were scored on the observed labels
    assert main(["bench", *common, "--recipe", "tuned"]) == 2  # the clean-label study has not run: nothing to train
    assert "no tuned study for an" in capsys.readouterr().err
    assert main(["bench", *common, "--recipe", "tuned-observed", "--no-report"]) == 0
    [record] = read_records(tmp_path / "results")
    assert record["spec"]["recipe"] == "tuned-observed" and record["spec"]["lr"] == summary["best_params"]["lr"]
    assert record["hparam_source"]["study"] == summary["study"]
