"""Bad input: one line saying what is wrong and what to do, exit status 2, nothing written or corrupted."""

import os
from pathlib import Path

import pytest

from bench.cli import main


@pytest.fixture
def project(tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with one finished record, a grid file and a shared data cache."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.toml").write_text("datasets = ['digits-mosaic']\nvariants = ['an']\nseeds = [0]\n"
                                        "device = 'cpu'\n[overrides]\nepochs = 1\n")
    assert main(["bench", "--config", "grid.toml", "--cache", str(cache_root), "--no-report"]) == 0
    return tmp_path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and "cache" not in p.parts and not p.name.startswith(".claims")}


CASES = {
    "unknown method": (["run", "--method", "nope"], "unknown method 'nope'"),
    "unknown dataset": (["run", "--method", "an", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    "unknown variant suffix": (["run", "--method", "an+boost"], "unknown method 'an+boost'"),
    "hyperparameter of the wrong type": (["run", "--method", "ls", "--set", "ls_coef=high"], "must be a number"),
    "integer hyperparameter given a fraction": (["run", "--method", "an", "--set", "epochs=1.5"], "must be an integer"),
    "boolean hyperparameter": (["run", "--method", "ll-r", "--set", "exact_schedule=maybe"], "true or false"),
    "negative learning rate": (["run", "--method", "an", "--set", "lr=-0.001"], "lr=-0.001 is out of range"),
    "boost_alpha below 1": (["run", "--method", "an+boostlu", "--set", "boost_alpha=0.5"], "boost_alpha=0.5"),
    "delta_rel of 1 or more": (["run", "--method", "ll-r", "--set", "delta_rel=1"], "delta_rel=1.0 is out of range"),
    "hyperparameter of another method": (["run", "--method", "an", "--set", "ls_coef=0.1"], "has no hyperparameter"),
    "malformed --set": (["run", "--method", "an", "--set", "lr"], "NAME=VALUE"),
    "warm-up not before the last epoch": (["run", "--method", "em-apl", "--set", "epochs=2", "--set",
                                           "apl_warmup=2"], "apl_warmup=2 must be below epochs=2"),
    "unknown protocol": (["run", "--method", "an", "--protocol", "two-positive"], "unknown observation protocol"),
    "unknown validation variant": (["run", "--method", "an", "--val-variant", "test"], "unknown validation variant"),
    "unknown device": (["run", "--method", "an", "--device", "tpu"], "unknown device"),
    "cuda without a GPU": (["run", "--method", "an", "--device", "cuda"], "no CUDA GPU is visible"),
    "missing backbone weights file": (["run", "--method", "an", "--set", "backbone=resnet50", "--weights",
                                       "missing.pth"], "weights file missing.pth does not exist"),
    "unknown backbone": (["run", "--method", "an", "--set", "backbone=vgg"], "unknown backbone"),
    "missing grid file": (["bench", "--config", "absent.toml"], "cannot read benchmark file absent.toml"),
    "unknown report format": (["report", "--format", "pdf"], "invalid choice"),
    "unknown subcommand": (["train"], "invalid choice"),
    "storage that cannot connect": (["bench", "--config", "grid.toml", "--storage",
                                     "postgresql://nobody:secret@127.0.0.1:9/none"], "cannot open the claims storage"),
    "unknown dataset for data info": (["data", "info", "nope"], "unknown dataset"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, project, cache_root, capsys):
    args, message = CASES[case]
    before = snapshot(project)
    assert main([*args, "--cache", str(cache_root)] if args[0] in ("run", "bench") else args) == 2
    err = capsys.readouterr().err
    assert err.startswith("pamlbench: error: ") and err.count("\n") == 1, err
    assert message in err
    assert "secret" not in err  # passwords are never printed
    assert snapshot(project) == before


def test_malformed_grid_files(project, capsys):
    for text, message in (("datasets = [", "not valid TOML"), ("datasets=['digits-mosaic']\nvariants=['an']",
                                                                "missing key 'seeds'"),
                          ("datasets=['digits-mosaic']\nvariants=['an']\nseeds=[-1]", "non-negative integers"),
                          ("datasets=['digits-mosaic']\nvariants=['an']\nseeds=[0]\nepochs=3", "unknown key 'epochs'")):
        Path("bad.toml").write_text(text)
        assert main(["bench", "--config", "bad.toml"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_corrupt_results_file_is_named_and_kept(project, cache_root, capsys):
    record = next(Path("results").glob("*.json"))
    record.write_text('{"run_key": "x", "trunc')
    before = snapshot(project)
    for args in (["report"], ["bench", "--config", "grid.toml", "--cache", str(cache_root)]):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"corrupt results file {record}" in err and "delete it" in err and err.count("\n") == 1
    assert snapshot(project) == before


def test_results_folder_not_writable(project, cache_root, capsys):
    Path("blocked").write_text("a file where a folder should be")
    assert main(["run", "--method", "an", "--set", "epochs=1", "--results", "blocked", "--cache", str(cache_root)]) == 2
    err = capsys.readouterr().err
    assert "results folder blocked is not writable" in err and err.count("\n") == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_results_folder(project, cache_root, capsys):
    os.chmod("results", 0o555)
    try:
        assert main(["run", "--method", "wan", "--set", "epochs=1", "--cache", str(cache_root)]) == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        os.chmod("results", 0o755)


def test_checkpoint_from_another_model(project, cache_root, capsys):
    import torch

    from bench.spec import make_spec

    spec = make_spec("digits-mosaic", "wan", 0, overrides={"epochs": 1})
    checkpoints = cache_root / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    partial = checkpoints / f"{spec.key(cache_root / 'data')}.partial.pt"
    torch.save({"epoch": 0, "run_key_fields": spec.to_dict(), "model": {"layer.weight": torch.zeros(3)}}, partial)
    try:
        assert main(["run", "--method", "wan", "--set", "epochs=1", "--device", "cpu", "--cache", str(cache_root)]) == 2
        err = capsys.readouterr().err
        assert "does not fit this model" in err and "delete it" in err and err.count("\n") == 1
        assert not list(Path("results").glob("*wan*"))
    finally:
        partial.unlink()
