"""Hostile input, as a new user (or a script gone wrong) gives it: every case is one line on stderr with no
traceback, exit status 2, and a byte-identical project folder before and after. Each case may first lay out
what it needs (a FIFO, a corrupt record, a broken plugin) before the folder is snapshotted.

Kinds: silent typos and repeats (names checked against what the cells accept), outputs that would clobber inputs,
records that are well-formed but meaningless, parse limits (depth, size, non-regular files), numbers and addresses,
plugins that fail to load, prepared folders with a broken manifest, and tracking or tuning settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from test_bad_input import run_case, snapshot

from bench import registry


def first_record() -> Path:
    return sorted(Path("results").glob("*.json"))[0]


def edit_record(change) -> None:
    """Rewrite the project's finished record with `change(record)` applied."""
    path = first_record()
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def set_in(record: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    for part in parents:
        record = record[int(part)] if isinstance(record, list) else record[part]
    record[last] = value


def plugin(body: str):
    def lay_out() -> None:
        (Path("plugins") / "methods").mkdir(parents=True)
        (Path("plugins") / "methods" / "broken.py").write_text(body)
        os.environ["PAMLBENCH_PLUGIN_PATH"] = str(Path("plugins").resolve())
        registry.methods.cache_clear()
    return lay_out


def manifest(content: bytes):
    def lay_out() -> None:
        Path("voc-prepared").mkdir()
        (Path("voc-prepared") / "manifest.json").write_bytes(content)
    return lay_out


def grid(text: str):
    return lambda: Path("hostile.toml").write_text(text)


def nothing() -> None:
    pass


def weights_file(content: bytes | dict):
    """Lay out `w.pth`: the bytes given, or a dict of tensors saved by torch."""
    def lay_out() -> None:
        if isinstance(content, bytes):
            Path("w.pth").write_bytes(content)
        else:
            torch.save(content, "w.pth")
    return lay_out


def no_imagenet_weights() -> None:
    """Point torch's cache at an empty folder, so that torchvision's ImageNet file is missing on any machine."""
    os.environ["TORCH_HOME"] = tempfile.mkdtemp(prefix="torch-home-")


def empty_folder() -> None:
    Path("empty").mkdir()


BASE = "datasets = ['digits-mosaic']\nvariants = ['an']\nseeds = [0]\ndevice = 'cpu'\n"
DEEP = "[" * 100_000 + "]" * 100_000
RUN = ["run", "--method", "an", "--set", "epochs=1"]
REPORT = ["report", "--out", "board.md"]

CASES = {
    # silent typos and repeats
    "misspelt --set": (nothing, ["bench", "--config", "grid.toml", "--set", "lrr=0.01"], "did you mean 'lr'?"),
    "--set no cell has": (nothing, ["bench", "--config", "grid.toml", "--set", "ls_coef=0.3"],
                          "--set ls_coef: no variant of this grid has that hyperparameter"),
    "--set boost_alpha without BoostLU cells": (nothing, ["bench", "--config", "grid.toml", "--set", "boost_alpha=3"],
                                                "--set boost_alpha: no variant"),
    "--set given twice": (nothing, ["bench", "--config", "grid.toml", "--set", "lr=0.001", "--set", "lr=0.01"],
                          "--set lr is given twice"),
    "--set given twice to run": (nothing, ["run", "--method", "an", "--set", "epochs=1", "--set", "epochs=2"],
                                 "--set epochs is given twice"),
    "misspelt --set in tune": (nothing, ["tune", "--config", "grid.toml", "--set", "epocs=2"],
                               "did you mean 'epochs'?"),
    "--set weights (not a hyperparameter)": (nothing, ["bench", "--config", "grid.toml", "--set", "weights=none"],
                                             "--set weights: no variant"),
    "misspelt grid-file override": (grid(BASE + "[overrides]\nepoch = 2\n"), ["bench", "--config", "hostile.toml"],
                                    "[overrides] epoch: no variant of this grid has that hyperparameter"),
    "grid-file override of an absent method": (grid(BASE + "[overrides]\napl_warmup = 2\n"),
                                               ["tune", "--config", "hostile.toml"], "[overrides] apl_warmup"),
    "unknown variant in bench": (nothing, ["bench", "--config", "grid.toml", "--variants", "ann"],
                                 "unknown method 'ann'"),
    "unknown dataset in bench": (nothing, ["bench", "--config", "grid.toml", "--dataset", "mnist"],
                                 "unknown dataset 'mnist'"),
    # outputs that would clobber inputs
    "report over a record": (nothing, ["report", "--out", "RECORD"], "is in the results folder results"),
    "report over a tuning result": (lambda: (Path("results/tuned").mkdir(), Path("results/tuned/s.json").write_text(
        "{}")), ["report", "--out", "results/tuned/s.json"], "is in the results folder results"),
    "report to a device": (nothing, ["report", "--out", "/dev/null"], "is not a regular file"),
    "report to a FIFO": (lambda: os.mkfifo("board.md"), REPORT, "--out board.md is not a regular file"),
    "bench leaderboard over its grid file": (nothing, ["bench", "--config", "grid.toml", "--out", "grid.toml"],
                                             "is one of this command's inputs"),
    "bench leaderboard over a record": (nothing, ["bench", "--config", "grid.toml", "--out", "RECORD"],
                                        "is in the results folder"),
    # records that are well-formed but meaningless
    "record with a NaN test mAP": (lambda: edit_record(lambda r: set_in(r, "test_map", float("nan"))), REPORT,
                                   "field 'test_map': Input should be a finite number"),
    "record with a negative mAP": (lambda: edit_record(lambda r: set_in(r, "test_map", -50)), REPORT,
                                   "field 'test_map': Input should be greater than or equal to 0"),
    "record with an mAP of 1e308": (lambda: edit_record(lambda r: set_in(r, "val_map", 1e308)), REPORT,
                                    "field 'val_map': Input should be less than or equal to 100"),
    "record with an infinite per-class AP": (lambda: edit_record(lambda r: set_in(r, "per_class_ap.0",
                                                                                  float("inf"))), REPORT,
                                             "field 'per_class_ap.0'"),
    "record with an empty curve": (lambda: edit_record(lambda r: set_in(r, "curve", [])), REPORT,
                                   "field 'curve': List should have at least 1 item"),
    "record whose curve skips an epoch": (lambda: edit_record(lambda r: set_in(r, "curve.0.epoch", 7)), REPORT,
                                          "the curve's epochs are not 1, 2, ... in order"),
    "record selecting an epoch past its curve": (lambda: edit_record(lambda r: set_in(r, "selections.clean.epoch",
                                                                                      99)), REPORT,
                                                 "picks an epoch after the last one"),
    "record whose headline is not the clean pick": (lambda: edit_record(lambda r: set_in(r, "test_map", 1.0)),
                                                    REPORT, "not those of the clean selection"),
    "record with a memorised share above 1": (lambda: edit_record(lambda r: set_in(r, "curve.0.fn_memorised", 2)),
                                              REPORT, "fn_memorised"),
    "record with a NaN training loss": (lambda: edit_record(lambda r: set_in(r, "curve.0.train_loss",
                                                                             float("nan"))), REPORT, "train_loss"),
    "record nested 100,000 deep": (lambda: Path("results/deep.json").write_text(DEEP), REPORT,
                                   "nested too deeply to be a run record"),
    "record that is a FIFO": (lambda: os.mkfifo("results/fifo.json"), REPORT, "is not a regular file"),
    "record that is a folder": (lambda: Path("results/folder.json").mkdir(), REPORT, "is not a regular file"),
    "bench over a meaningless record": (lambda: edit_record(lambda r: set_in(r, "test_map", float("nan"))),
                                        ["bench", "--config", "grid.toml"], "Input should be a finite number"),
    # parse limits and files that are not regular
    "grid file that is a FIFO": (lambda: os.mkfifo("fifo.toml"), ["bench", "--config", "fifo.toml"],
                                 "benchmark file fifo.toml is not a regular file"),
    "grid file nested 100,000 deep": (grid("a = " + DEEP + "\n"), ["bench", "--config", "hostile.toml"],
                                      "nested too deeply to be a grid file"),
    "grid file that is a device": (nothing, ["tune", "--config", "/dev/zero"], "is not a regular file"),
    "results folder in a symbolic-link loop": (lambda: (os.symlink("loop-b", "loop-a"), os.symlink("loop-a",
                                                                                                    "loop-b")),
                                               ["report", "--results", "loop-a"], "Too many levels of symbolic links"),
    "cache folder in a symbolic-link loop": (lambda: (os.symlink("loop-b", "loop-a"), os.symlink("loop-a", "loop-b")),
                                             ["bench", "--config", "grid.toml", "--cache", "loop-a"],
                                             "--cache loop-a cannot be used"),
    # numbers and addresses
    "threads beyond 64 bits": (nothing, ["bench", "--config", "grid.toml", "--threads", "18446744073709551616"],
                               "--threads 18446744073709551616 must be in [1, 1025)"),
    "threads in superscript digits": (nothing, [*RUN, "--threads", "²"], "--threads must be an integer, not '²'"),
    "seed in Arabic-Indic digits": (nothing, ["run", "--method", "an", "--seed", "٣"], "must be an integer"),
    "zero jobs": (nothing, ["bench", "--config", "grid.toml", "--jobs", "0"], "--jobs 0 must be in [1, 1025)"),
    "jobs with a cluster": (nothing, ["bench", "--config", "grid.toml", "--jobs", "2", "--cluster", "127.0.0.1:9"],
                            "--jobs sets local worker processes"),
    "cluster port in superscript digits": (nothing, ["bench", "--config", "grid.toml", "--cluster", "127.0.0.1:²"],
                                           "give HOST:PORT of the Ray head"),
    "cluster port above 65535": (nothing, ["bench", "--config", "grid.toml", "--cluster", "127.0.0.1:99999"],
                                 "port 99999 is not in 1-65535"),
    "cluster port 0": (nothing, ["tune", "--config", "grid.toml", "--cluster", "127.0.0.1:0"],
                       "port 0 is not in 1-65535"),
    "bracketed IPv6 head": (nothing, ["bench", "--config", "grid.toml", "--cluster", "[::1]:6379"],
                            "IPv6 head addresses are not supported"),
    "infinite heartbeat": (nothing, ["tune", "--config", "grid.toml", "--heartbeat", "inf"],
                           "at most 3600 seconds, not inf"),
    "NaN heartbeat": (nothing, ["tune", "--config", "grid.toml", "--heartbeat", "nan"], "not nan"),
    "negative retries": (nothing, ["bench", "--config", "grid.toml", "--cluster", "127.0.0.1:9", "--retries", "-1"],
                         "--retries -1 must be at least 0"),
    "image cache of size 0": (nothing, ["data", "prepare", "voc", "--raw", "results", "--out", "v", "--size", "0"],
                              "--size 0 must be in [1, 4097)"),
    "linear setting on --weights none": (nothing, [*RUN, "--set", "freeze_backbone=true", "--weights", "none"],
                                         "the feature cache cannot tell the seeds' random backbones apart"),
    "LinearInit on --weights none in a grid": (nothing, ["bench", "--config", "grid.toml", "--variants", "role+li",
                                                          "--weights", "none"], "cannot tell the seeds' random"),
    "linear study on --weights none": (nothing, ["tune", "--config", "grid.toml", "--variants", "an", "--set",
                                                 "freeze_backbone=true", "--weights", "none"],
                                       "cannot tell the seeds' random"),
    # backbone weights: refused before anything is written, --plan included
    "weights for the small CNN": (weights_file(b"w"), ["bench", "--config", "grid.toml", "--weights", "w.pth"],
                                  "the small-cnn backbone has no pretrained weights; drop --weights"),
    "weights for the small CNN in a plan": (weights_file(b"w"), ["bench", "--config", "grid.toml", "--weights",
                                                                 "w.pth", "--plan"], "the small-cnn backbone has no"),
    "ImageNet weights for the small CNN to tune": (nothing, ["tune", "--config", "grid.toml", "--weights", "imagenet"],
                                                   "the small-cnn backbone has no pretrained weights"),
    "weights file torch cannot read": (weights_file(b"not a state dict"), [*RUN, "--set", "backbone=resnet50",
                                                                           "--weights", "w.pth"],
                                       "weights file w.pth is not a state dict that torch.load reads"),
    "weights of another network": (weights_file({"fc.weight": torch.ones(2, 2)}),
                                   [*RUN, "--set", "backbone=resnet50", "--weights", "w.pth"],
                                   "weights file w.pth does not fit the resnet50 backbone"),
    "ImageNet weights not on this machine": (no_imagenet_weights, [*RUN, "--set", "backbone=resnet50", "--weights",
                                                                   "imagenet"],
                                             "ImageNet weights for resnet50 are not on this machine"),
    "weights folder": (nothing, [*RUN, "--set", "backbone=resnet50", "--weights", "results"],
                       "weights file results is a folder; give the state-dict file"),
    # figures
    "figures of a missing results folder": (nothing, ["figures", "--results", "nowhere"],
                                            "results folder nowhere does not exist"),
    "figures of a results folder without records": (empty_folder, ["figures", "--results", "empty"],
                                                    "no run records in empty"),
    # tuning budgets
    "unknown key in [tuning]": (grid(BASE + "[tuning]\ntrials = 5\n"), ["tune", "--config", "hostile.toml"],
                                "field 'tuning.trials': Extra inputs are not permitted"),
    "zero trials in [tuning]": (grid(BASE + "[tuning]\nn_trials = 0\n"), ["tune", "--config", "hostile.toml"],
                                "field 'tuning.n_trials'"),
    "unknown pruner in [tuning]": (grid(BASE + "[tuning]\npruner = 'random'\n"), ["bench", "--config", "hostile.toml"],
                                   "field 'tuning.pruner'"),
    "unknown objective": (nothing, ["tune", "--config", "grid.toml", "--val-variant", "test"], "invalid choice"),
    # plugins that fail to load
    "plugin with a syntax error": (plugin("def broken(:\n"), ["list", "methods"],
                                   "plugins/methods/broken.py cannot be loaded (line 1): SyntaxError"),
    "plugin importing a missing module": (plugin("import no_such_module\n"), ["list", "methods"],
                                          "ModuleNotFoundError: No module named 'no_such_module'"),
    "plugin raising on import": (plugin("raise RuntimeError('boom')\n"), RUN, "RuntimeError: boom"),
    "plugin whose hparams is None": (plugin("from bench import Method\nclass M(Method):\n    name = 'm'\n"
                                            "    summary = 's'\n    hparams = None\n"), ["list", "methods"],
                                     "`hparams` must be a dict of Hyperparam by name, not NoneType"),
    "plugin whose summary is a number": (plugin("from bench import Method\nclass M(Method):\n    name = 'm'\n"
                                                "    summary = 3\n"), ["bench", "--config", "grid.toml"],
                                         "`summary` must be a string"),
    # prepared folders with a broken manifest
    "manifest that is a JSON list": (manifest(b"[]"), ["run", "--dataset", "voc", "--method", "an", "--data",
                                                       "voc-prepared"], "a JSON list, not an object"),
    "manifest that is not UTF-8": (manifest(b"\xff\xfe{}"), ["bench", "--config", "grid.toml", "--dataset", "voc",
                                                             "--data", "voc-prepared"], "can't decode byte 0xff"),
    "manifest nested 100,000 deep": (manifest(DEEP.encode()), ["data", "info", "voc", "--data", "voc-prepared"],
                                     "nested too deeply"),
    # tracking
    "tracking database in a missing folder": (lambda: os.environ.__setitem__(
        "MLFLOW_TRACKING_URI", "sqlite:///no/such/dir/m.db"), RUN, "folder no/such/dir does not exist"),
}


@pytest.fixture
def clean_environment():
    """The variables a case may set (plugin path, tracking URI, torch's cache), restored afterwards."""
    saved = {name: os.environ.get(name) for name in ("PAMLBENCH_PLUGIN_PATH", "MLFLOW_TRACKING_URI", "TORCH_HOME")}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    registry.methods.cache_clear()
    registry.datasets.cache_clear()


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_input_is_one_line_exit_2_and_changes_nothing(case, project, cache_root, capsys,
                                                              clean_environment):
    lay_out, args, message = CASES[case]
    lay_out()
    args = [str(first_record()) if arg == "RECORD" else arg for arg in args]
    before = snapshot(project)
    err = run_case(args, str(cache_root), capsys)
    assert message in err, err
    assert "Traceback" not in err
    assert snapshot(project) == before


def test_there_are_at_least_60_cases():
    assert len(CASES) >= 60


def test_a_closed_pipe_ends_quietly(project):
    """`pamlbench list methods | head -1`: no BrokenPipeError, only the first line, SIGPIPE's status."""
    done = subprocess.run(f"{sys.executable} -m bench.cli list methods | head -1; exit ${{PIPESTATUS[0]}}",
                          shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert done.stdout.count("\n") == 1 and done.stderr == "", done.stderr
    assert done.returncode in (0, 141)


@pytest.mark.slow
def test_figures_on_a_clone_without_checkpoints_say_how_to_get_them(project, cache_root, capsys):
    """A fresh clone has the records but not the best-epoch weights: `figures` says how to get them instead of
    sending the user to a `make bench` that trains nothing, and `figures --train` trains those cells again (the
    same run keys, so the same weights) and draws, leaving the records as they are."""
    from bench.cli.main import main

    Path("grid.toml").write_text(Path("grid.toml").read_text().replace("['an']", "['an', 'full']"))
    assert main(["bench", "--config", "grid.toml", "--cache", str(cache_root), "--no-report", "--no-tracking",
                 "--jobs", "1", "--threads", "1"]) == 0
    fresh_cache = project / "fresh-cache"
    (fresh_cache / "data").mkdir(parents=True)
    for built in (cache_root / "data").iterdir():  # the built mosaics, as a first run would build them
        (fresh_cache / "data" / built.name).symlink_to(built)
    assert main(["figures", "--cache", str(fresh_cache)]) == 0
    out = capsys.readouterr().out
    assert "figures: skipped for digits-mosaic: the best-epoch weights of" in out
    assert "pamlbench figures --train" in out and "make bench" not in out
    records = snapshot(project / "results")
    assert main(["figures", "--train", "--cache", str(fresh_cache)]) == 0
    out = capsys.readouterr().out
    assert out.count("figures: training ") == 2 and "cannot train" not in out
    keys = {path.stem for path in (project / "results").glob("*.json")}
    assert {path.stem for path in (fresh_cache / "checkpoints").glob("*.pt")} == keys  # the records' own run keys
    assert (project / "results" / "figures" / "cam_attribution_digits-mosaic.png").exists()
    assert {k: v for k, v in snapshot(project / "results").items() if "figures" not in k} == {
        k: v for k, v in records.items() if "figures" not in k}
