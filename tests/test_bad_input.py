"""Bad input: one line saying what is wrong and what to do, exit status 2, nothing written or corrupted.

The trained project (one finished record, a grid file; the `project` fixture of conftest.py) is built once per
session and copied for each case."""

import os
import subprocess
from pathlib import Path

import pytest
from fixtures import PROJECT_GRID

from bench.cli.main import main


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file and folder under `folder` (claims databases aside: a worker's bookkeeping), with contents."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(folder.rglob("*"))
            if not p.name.startswith(".claims")}


BAD_GRIDS = {
    "seeds not a list": ("seeds = 3", "field 'seeds': Input should be a valid list"),
    "a string instead of a list of variants": ("variants = 'an'", "field 'variants': Input should be a valid list"),
    "numbers as dataset names": ("datasets = [1]", "field 'datasets.0': Input should be a valid string"),
    "empty list of seeds": ("seeds = []", "field 'seeds': List should have at least 1 item"),
    "negative seed": ("seeds = [-1]", "field 'seeds.0': Input should be greater than or equal to 0"),
    "seed beyond numpy's range": ("seeds = [4294967296]", "field 'seeds.0': Input should be less than 4294967296"),
    "unknown key": ("epochs = 3", "field 'epochs': Extra inputs are not permitted"),
    "overrides not a table": ("overrides = [1]", "field 'overrides': Input should be a valid dictionary"),
    "unknown dataset name": ("datasets = ['imagenet']", "unknown dataset 'imagenet'"),
}

CASES = {
    # names and hyperparameters
    "unknown method": (["run", "--method", "nope"], "unknown method 'nope'"),
    "unknown dataset": (["run", "--method", "an", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    "unknown variant suffix": (["run", "--method", "an+boost"], "unknown method 'an+boost'"),
    "hyperparameter of the wrong type": (["run", "--method", "ls", "--set", "ls_coef=high"], "must be a number"),
    "integer hyperparameter given a fraction": (["run", "--method", "an", "--set", "epochs=1.5"], "must be an integer"),
    "boolean hyperparameter": (["run", "--method", "ll-r", "--set", "exact_schedule=maybe"], "true or false"),
    "negative learning rate": (["run", "--method", "an", "--set", "lr=-0.001"], "lr=-0.001 is out of range"),
    "boost_alpha below 1": (["run", "--method", "an+boostlu", "--set", "boost_alpha=0.5"], "boost_alpha=0.5"),
    "boost_alpha without BoostLU": (["run", "--method", "an", "--set", "boost_alpha=3"],
                                    "boost_alpha applies only to variants with BoostLU"),
    "delta_rel of 1 or more": (["run", "--method", "ll-r", "--set", "delta_rel=1"], "delta_rel=1.0 is out of range"),
    "hyperparameter of another method": (["run", "--method", "an", "--set", "ls_coef=0.1"], "has no hyperparameter"),
    "unknown schedule": (["run", "--method", "an", "--set", "lr_schedule=step"], "is not one of constant, cosine"),
    "malformed --set": (["run", "--method", "an", "--set", "lr"], "NAME=VALUE"),
    "unknown protocol": (["run", "--method", "an", "--protocol", "two-positive"], "unknown observation protocol"),
    "unknown device": (["run", "--method", "an", "--device", "tpu"], "invalid choice: 'tpu'"),
    "cuda without a GPU": (["run", "--method", "an", "--device", "cuda"], "no CUDA GPU is visible"),
    "missing backbone weights file": (["run", "--method", "an", "--set", "backbone=resnet50", "--weights",
                                       "missing.pth"], "weights file missing.pth does not exist"),
    "missing weights file for a grid": (["bench", "--weights", "missing.pth"], "weights file missing.pth does not"),
    "missing weights file for tuning": (["tune", "--weights", "missing.pth"], "weights file missing.pth does not"),
    "unknown backbone": (["run", "--method", "an", "--set", "backbone=vgg"], "is not one of small-cnn"),
    # numbers out of their domain
    "negative seed": (["run", "--method", "an", "--seed", "-1"], "a seed -1 must be in [0, 4294967296)"),
    "seed beyond numpy's range": (["run", "--method", "an", "--seed", "4294967296"], "must be in [0, 4294967296)"),
    "negative label seed": (["run", "--method", "an", "--label-seed", "-5"], "a seed -5 must be in"),
    "negative bench seed": (["bench", "--config", "grid.toml", "--seeds", "-1"], "a seed -1 must be in"),
    "zero threads": (["run", "--method", "an", "--threads", "0"], "--threads 0 must be in [1, 1025)"),
    "negative threads": (["bench", "--config", "grid.toml", "--threads", "-2"], "--threads -2 must be in [1, 1025)"),
    "zero heartbeat": (["tune", "--config", "grid.toml", "--heartbeat", "0"],
                       "the heartbeat must be more than 0 and at most 3600 seconds"),
    "zero trials": (["tune", "--config", "grid.toml", "--n-trials", "0"], "--n-trials 0 must be at least 1"),
    "unknown pruner": (["tune", "--config", "grid.toml", "--pruner", "foo"], "invalid choice: 'foo'"),
    "bad override in a tune": (["tune", "--config", "grid.toml", "--set", "lr=x"], "lr='x' must be a number"),
    # paths of the wrong kind
    "results folder is a file": (["run", "--method", "an", "--results", "grid.toml"],
                                 "--results grid.toml is a file, not a folder"),
    "cache folder is a file": (["bench", "--config", "grid.toml", "--cache", "grid.toml"],
                               "--cache grid.toml is a file, not a folder"),
    "grid file is a folder": (["bench", "--config", "results"], "benchmark file results is a folder"),
    "missing grid file": (["bench", "--config", "absent.toml"], "cannot read benchmark file absent.toml"),
    "leaderboard in a missing folder": (["bench", "--config", "grid.toml", "--out", "nowhere/board.md"],
                                        "folder nowhere does not exist"),
    "leaderboard is a folder": (["report", "--out", "results"], "--out results is a folder"),
    "data folder is a file": (["bench", "--config", "grid.toml", "--data", "grid.toml"],
                              "--data grid.toml is a file, not a folder"),
    "data folder for a built-in dataset": (["run", "--method", "an", "--data", "results"],
                                           "dataset 'digits-mosaic' is built in and takes no --data folder"),
    "raw folder is a file": (["data", "prepare", "voc", "--raw", "grid.toml", "--out", "voc"],
                             "--raw grid.toml is a file, not a folder"),
    "misspelt results folder for report": (["report", "--results", "resluts"], "results folder resluts does not exist"),
    # the rest
    "unknown report format": (["report", "--format", "pdf"], "invalid choice"),
    "unknown subcommand": (["train"], "invalid choice"),
    "storage that cannot connect": (["bench", "--config", "grid.toml", "--storage",
                                     "postgresql://nobody:secret@127.0.0.1:9/none"], "cannot open the claims storage"),
    "unknown dataset for data info": (["data", "info", "nope"], "unknown dataset"),
    # --cluster (only addresses that fail before Ray starts: nothing here may leave the loopback)
    "cluster head that cannot be reached": (["bench", "--config", "grid.toml", "--cluster", "127.0.0.1:9"],
                                            "cannot reach the Ray head at 127.0.0.1:9"),
    "cluster address without a port": (["tune", "--config", "grid.toml", "--cluster", "headnode"],
                                       "give HOST:PORT of the Ray head"),
    "cluster option without --cluster": (["bench", "--config", "grid.toml", "--retries", "2"],
                                         "--retries only applies with --cluster"),
    "worker cache without --cluster": (["tune", "--config", "grid.toml", "--worker-cache", "wc"],
                                       "--worker-cache only applies with --cluster"),
    "GPU share of zero": (["bench", "--config", "grid.toml", "--cluster", "127.0.0.1:9", "--gpus-per-cell", "0"],
                          "--gpus-per-cell 0 must be more than 0"),
    "worker cache that is a file": (["bench", "--config", "grid.toml", "--cluster", "127.0.0.1:9", "--worker-cache",
                                     "grid.toml"], "--worker-cache grid.toml is a file"),
}


def run_case(args: list[str], cache: str | None, capsys) -> str:
    full = [*args, "--cache", cache] if cache and args[0] in ("run", "bench", "tune") and "--cache" not in args \
        else args
    assert main(full) == 2
    err = capsys.readouterr().err
    assert err.startswith("pamlbench: error: ") and err.count("\n") == 1, err
    assert "pamlbench: error: pamlbench" not in err  # no doubled prefix
    assert "secret" not in err  # passwords are never printed
    return err


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, project, capsys):
    args, message = CASES[case]
    before = snapshot(project)
    assert message in run_case(args, None, capsys)
    assert snapshot(project) == before  # no results, claims, MLflow or Optuna database, lock file or folder


@pytest.mark.parametrize("case", list(BAD_GRIDS))
def test_malformed_grid_files(case, project, capsys):
    text, message = BAD_GRIDS[case]
    lines = {line.split(" = ")[0]: line for line in PROJECT_GRID.split("[overrides]")[0].splitlines()}
    lines[text.split(" = ")[0]] = text
    Path("bad.toml").write_text("\n".join(lines.values()) + "\n")
    before = snapshot(project)
    for command in ("bench", "tune"):
        assert message in run_case([command, "--config", "bad.toml"], None, capsys)
    assert snapshot(project) == before


def test_grid_files_that_are_not_toml_or_not_utf8(project, capsys):
    Path("broken.toml").write_text("datasets = [")
    assert "not valid TOML" in run_case(["bench", "--config", "broken.toml"], None, capsys)
    Path("latin1.toml").write_bytes("datasets = ['caf\xe9']\n".encode("latin-1"))
    assert "is not UTF-8 text" in run_case(["bench", "--config", "latin1.toml"], None, capsys)


def test_warm_up_not_before_the_last_epoch(project, cache_root, capsys):
    """Refused when the spec is made, for one run and for a grid: no claim, no MLflow run, no record."""
    Path("short.toml").write_text("datasets = ['digits-mosaic']\nvariants = ['em-apl']\nseeds = [0]\n"
                                  "[overrides]\nepochs = 3\n")
    before = snapshot(project)
    message = run_case(["run", "--method", "em-apl", "--set", "epochs=2", "--set", "apl_warmup=2"], str(cache_root),
                       capsys)
    assert "apl_warmup=2 must be below epochs=2" in message
    for command in ("bench", "tune"):
        assert "apl_warmup=6 must be below epochs=3" in run_case([command, "--config", "short.toml"], str(cache_root),
                                                                  capsys)
    assert snapshot(project) == before


def test_corrupt_results_file_is_named_and_kept(project, cache_root, capsys):
    record = next(Path("results").glob("*.json"))
    record.write_text('{"run_key": "x", "trunc')
    before = snapshot(project)
    for args in (["report"], ["bench", "--config", "grid.toml", "--cache", str(cache_root)]):
        err = run_case(args, None, capsys)
        assert f"corrupt results file {record}" in err and "delete it" in err
    assert snapshot(project) == before


def test_results_folder_not_writable(project, cache_root, capsys):
    Path("blocked").write_text("a file where a folder should be")
    err = run_case(["run", "--method", "an", "--set", "epochs=1", "--results", "blocked"], str(cache_root), capsys)
    assert "--results blocked is a file, not a folder" in err


@pytest.fixture
def read_only_folder(project: Path):
    """A folder nobody may write to: a read-only tmpfs where this process may mount one (root ignores folder
    permissions), else a folder of mode 0555."""
    folder = project / "read-only"
    folder.mkdir()
    if os.geteuid() == 0:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"root, and cannot mount a read-only tmpfs here: {done.stderr.strip()}")
        yield folder
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)


def test_read_only_results_folder(read_only_folder, cache_root, capsys):
    err = run_case(["run", "--method", "wan", "--set", "epochs=1", "--results", str(read_only_folder)],
                   str(cache_root), capsys)
    assert f"results folder {read_only_folder} is not writable" in err


def test_checkpoint_from_another_model(project, cache_root, capsys):
    import torch

    from bench.spec import make_spec

    spec = make_spec("digits-mosaic", "wan", 0, overrides={"epochs": 1})
    checkpoints = cache_root / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    partial = checkpoints / f"{spec.key(spec.identity(cache_root / 'data'))}.partial.pt"
    torch.save({"epoch": 0, "run_key_fields": spec.to_dict(), "model": {"layer.weight": torch.zeros(3)}}, partial)
    try:
        err = run_case(["run", "--method", "wan", "--set", "epochs=1", "--device", "cpu"], str(cache_root), capsys)
        assert "does not fit this model" in err and "delete it" in err
        assert len(list(Path("results").glob("*.json"))) == 1
    finally:
        partial.unlink()
