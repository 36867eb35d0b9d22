"""Recipes: the `paper` recipe resolved on real-dataset fixtures (each paper's settings, the BoostLU paper's for
BoostLU variants, Cole et al.'s grid study), the dataset's default recipes, and the refusals."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import voc_tree

from bench.cli.main import main
from bench.errors import UserError
from bench.plan.papers import papers
from bench.plan.recipes import check_recipes, paper_recipe
from bench.records import read_records

SMALL = ["--set", "backbone=small-cnn", "--set", "image_size=32", "--set", "epochs=1"]


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("voc")
    voc_tree(folder / "raw", train=40, val=12)
    assert main(["data", "prepare", "voc", "--raw", str(folder / "raw"), "--out", str(folder / "voc")]) == 0
    return folder / "voc"


def plan_lines(capsys, *arguments: str) -> tuple[dict[str, str], str]:
    """variant -> its plan line, and the whole output, of `bench --plan` with `arguments`."""
    assert main(["bench", "--plan", "--seeds", "0", *arguments]) == 0
    captured = capsys.readouterr()
    return {line.split()[1]: line for line in captured.out.splitlines() if " seed=" in line}, captured.out


def test_voc_runs_each_papers_recipe_by_default(voc, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    lines, err = plan_lines(capsys, "--dataset", "voc", "--data", str(voc), "--variants", "ll-r", "em",
                            "ll-cp+boostlu", "an", "an+boostlu", "--cache", str(tmp_path / "cache"))
    em = lines["em"]
    assert "recipe=paper" in em
    for value in ("batch_size=8 (paper zhou)", "lr=1e-05 (paper zhou)", "head_lr_mult=1.0 (paper zhou)",
                  "epochs=10 (paper zhou)", "backbone=resnet50 (default)"):
        assert value in em
    boosted = lines["ll-cp+boostlu"]
    assert "boost_alpha=5.0 (paper boostlu)" in boosted and "head_lr_mult=10.0 (paper boostlu)" in boosted
    assert "delta_rel=0.001 (paper boostlu)" in boosted          # BoostLU's delta for LL-Cp
    assert "extrapolated" not in boosted
    assert "(extrapolated: BoostLU's code runs ll-r, ll-ct, ll-cp only" in lines["an+boostlu"]
    assert "an" not in lines and "ll-r" not in lines             # Cole et al.'s and LL's searches have not run yet
    assert "the cole grid study of an on voc has not run (run `pamlbench tune --recipe paper`)" in err
    assert "the ll grid study of ll-r on voc has not run (run `pamlbench tune --recipe paper`)" in err


def test_ll_s_delta_rel_is_a_grid_study_and_boostlu_keeps_its_own_values():
    own = paper_recipe("coco", "ll-ct")
    assert own.search == {"delta_rel": [0.001, 0.002, 0.003, 0.004, 0.005]} and "delta_rel" not in own.settings
    assert (own.settings["batch_size"], own.settings["lr"], own.settings["head_lr_mult"], own.rule) == (16, 1e-5,
                                                                                                         10.0, "ll")
    for variant, delta in (("ll-r+boostlu", 0.005), ("ll-ct+boostlu", 0.002), ("ll-cp+boostlu", 0.001)):
        boosted = paper_recipe("coco", variant)
        assert boosted.settings["delta_rel"] == delta and boosted.search == {} and boosted.rule == "clean"


def test_asl_has_no_paper_recipe_and_its_published_number_no_recipe():
    with pytest.raises(UserError, match="no paper recipe for asl on voc: no source paper published asl there"):
        paper_recipe("voc", "asl")
    assert "asl" in papers()["main"]["values"] and "asl" not in papers()["main"]["recipes"]


def test_boostlu_applied_to_another_method_is_marked_an_extrapolation():
    recipe = paper_recipe("voc", "em+boostlu")
    assert recipe.paper == "boostlu" and recipe.extrapolation.startswith("BoostLU's code runs ll-r, ll-ct, ll-cp only")
    assert recipe.source_record()["extrapolation"] == recipe.extrapolation
    assert "extrapolation" not in paper_recipe("voc", "ll-r+boostlu-infer").source_record()


def test_every_recipe_names_the_repository_files_it_came_from():
    repositories = {"cole": "elijahcole/single-positive-multi-label", "zhou": "Correr-Zhou/SPML-AckTheUnknown",
                    "ll": "snucml/LargeLossMatters", "boostlu": "youngwk/BridgeGapExplanationPAMC"}
    recipes = papers()["recipes"]
    assert set(recipes) == set(repositories)
    for key, table in recipes.items():
        assert table["code"], key
        for path in table["code"]:
            assert re.fullmatch(rf"{re.escape(repositories[key])}/[\w./-]+\.(py|md)", path), path
            assert path.split("/")[-1] in table["source"], (key, path)  # the source text names the same file
        assert repositories[key].split("/")[1] in table["source"]


def test_another_recipe_on_voc_and_the_recipes_of_a_grid_file(voc, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = ["--dataset", "voc", "--data", str(voc), "--variants", "ll-r", "--cache", str(tmp_path / "cache")]
    lines, _ = plan_lines(capsys, *common, "--recipe", "defaults")
    assert "recipe=defaults" in lines["ll-r"] and "batch_size=8 (default)" in lines["ll-r"]
    assert "weights imagenet" in lines["ll-r"]                  # the real datasets' default weights
    lines, _ = plan_lines(capsys, *common, "--recipe", "defaults", "--weights", "none")
    assert "weights none" in lines["ll-r"]
    Path("grid.toml").write_text('datasets = ["voc"]\nvariants = ["ll-r"]\nseeds = [0]\nrecipes = ["defaults"]\n')
    lines, _ = plan_lines(capsys, *common, "--config", "grid.toml")
    assert "recipe=defaults" in lines["ll-r"]
    Path("grid.toml").write_text('datasets = ["voc"]\nvariants = ["ll-r"]\nseeds = [0]\nrecipes = ["papers"]\n')
    assert main(["bench", "--plan", *common, "--config", "grid.toml"]) == 2
    assert "field 'recipes.0'" in capsys.readouterr().err


def test_paper_recipes_of_other_datasets():
    cub = paper_recipe("cub", "em-apl")
    assert (cub.paper, cub.rule, cub.settings["lr"], cub.settings["batch_size"]) == ("zhou", "zhou", 1e-4, 8)
    coco = paper_recipe("coco", "role+boostlu")
    assert coco.paper == "boostlu" and coco.settings["batch_size"] == 16 and coco.rule == "clean"
    cole = paper_recipe("nuswide", "wan")
    assert cole.search == {"batch_size": [8, 16], "lr": [1e-2, 1e-3, 1e-4, 1e-5]} and cole.rule == "clean"
    with pytest.raises(UserError, match="no paper recipe for ll-r on openimages"):
        paper_recipe("openimages", "ll-r")


def test_every_boostlu_variant_runs_the_boostlu_paper_s_recipe_and_only_on_its_datasets():
    for variant in ("ll-r+boostlu", "ll-r+boostlu-train", "ll-r+boostlu-infer"):
        recipe = paper_recipe("voc", variant)
        assert (recipe.paper, recipe.settings["boost_alpha"], recipe.settings["lr"]) == ("boostlu", 5.0, 1e-5)
        assert recipe.settings["delta_rel"] == 0.005 and recipe.extrapolation is None  # BoostLU's own value
        with pytest.raises(UserError, match=f"^no paper recipe for {re.escape(variant)} on openimages: the BoostLU "
                                            "paper covers voc, coco, nuswide, cub; use --recipe defaults or tuned$"):
            paper_recipe("openimages", variant)
    with pytest.raises(UserError, match="^no paper recipe for an on openimages: no source paper published an there; "
                                        "use --recipe defaults or tuned$"):
        paper_recipe("openimages", "an")


def test_recipe_names_are_checked_where_they_are_given():
    assert check_recipes(["tuned", "tuned-observed", "paper", "defaults"], "--recipe") == ["tuned", "tuned-observed",
                                                                                  "paper", "defaults"]
    with pytest.raises(UserError, match="^grid.toml: unknown recipe 'papers'; use one of tuned, tuned-observed, "
                                        "paper, defaults$"):
        check_recipes(["tuned", "papers"], "grid.toml")


def test_a_paper_recipe_s_record_names_its_paper_source_rule_and_values():
    recipe = paper_recipe("coco", "ll-ct")
    assert recipe.source_record() == {"kind": "paper", "paper": "ll", "source": papers()["recipes"]["ll"]["source"],
                                      "rule": "ll", "values": recipe.settings}
    assert recipe.source.startswith("Kim et al., CVPR 2022")


def test_the_paper_recipe_on_a_mosaic_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--recipe", "paper", "--variants", "an", "--seeds", "0", "--cache",
                 str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert "nothing to train: paper recipe: no paper recipe for an on digits-mosaic" in err
    assert not (tmp_path / "results").exists()
    assert main(["tune", "--recipe", "defaults", "--variants", "an", "--cache", str(tmp_path / "cache")]) == 2
    assert "the defaults recipe has nothing to search" in capsys.readouterr().err


@pytest.mark.slow
def test_cole_grid_study_tries_every_setting_once_and_its_best_is_the_recipe(voc, tmp_path):
    def cli(*arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bench.cli", *arguments, "--dataset", "voc", "--data", str(voc),
                               "--no-tracking", "--jobs", "1", "--threads", "1", "--cache", str(tmp_path / "cache"),
                               *SMALL], cwd=tmp_path, capture_output=True, text=True, timeout=600)

    tuned = cli("tune", "--recipe", "paper", "--variants", "an", "em")
    assert tuned.returncode == 0, tuned.stderr
    assert "em on voc: zhou published its values; nothing to search" in tuned.stdout
    summary = json.loads(next((tmp_path / "results" / "tuned").glob("*an_small-cnn_1ep_paper.json")).read_text())
    assert summary["n_trials"] == 8 and summary["pruned"] == 0 and summary["budget"]["sampler"] == "grid"
    tried = {(line.split("batch_size=")[1].split(",")[0], line.split("lr=")[1]) for line in tuned.stdout.splitlines()
             if ": trial " in line and " val mAP " in line}
    assert tried == {(b, lr) for b in ("8", "16") for lr in ("0.01", "0.001", "0.0001", "1e-05")}
    best = summary["best_params"]
    bench = cli("bench", "--variants", "an", "--seeds", "0")
    assert bench.returncode == 0, bench.stderr
    [record] = read_records(tmp_path / "results")
    assert record["spec"]["recipe"] == "paper" and record["spec"]["batch_size"] == best["batch_size"]
    assert record["spec"]["lr"] == best["lr"] and record["spec"]["head_lr_mult"] == 1.0
    source = record["hparam_source"]
    assert source["paper"] == "cole" and source["rule"] == "clean" and source["study"] == summary["study"]


def test_no_module_but_the_recipes_compares_recipe_names():
    """What a recipe is lives in `bench.plan.recipes.RECIPE`; every other module asks it (tuned? from a paper?
    its studies' suffix?) instead of comparing names, so that a new recipe is one entry there."""
    from bench.versions import BENCH_DIR

    comparison = re.compile(r"""recipe\w*\)? *(==|!=) *["']|["'](tuned|tuned-observed|paper|defaults)["'] *(==|!=)"""
                            r"""|recipe\w* +(not )?in +\(["']""")
    offenders = [f"{path.relative_to(BENCH_DIR)}:{number}" for path in sorted(BENCH_DIR.rglob("*.py"))
                 if path.name != "recipes.py"
                 for number, line in enumerate(path.read_text().splitlines(), 1) if comparison.search(line)]
    assert offenders == []
    assert comparison.search('if spec.recipe == "paper":') and comparison.search('if "tuned" != recipe:')
