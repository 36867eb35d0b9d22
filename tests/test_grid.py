"""The grid, in-process (`bench.plan.grid`): the tuning budget's cap and its one-line description, narrowing by the
command line, the override check, one cell's spec, study names per recipe, each recipe's values and where they came
from, the cells' order, and the grid file's refusals. The commands that read a grid are tested in test_plan.py and
test_bad_input.py; these tests reach every branch without a subprocess."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bench.errors import UserError
from bench.plan.grid import Grid, TuningBudget, accepted_hparams, load_grid, refuse_unkeyed_features
from bench.plan.recipes import paper_recipe
from bench.plan.studies import convergence, spec_study, tuned_path
from bench.spec import make_spec

SECOND_PROTOCOL = TuningBudget(startup_trials=6, n_trials=20, count="completed", max_trials=40, pruner="none",
                               first_trials="defaults", sampler_seed="per-study", widen_edges=2,
                               confirm_seeds=[100, 101, 102], confirm_top=3, extend_if_improving=True)


def save_study(folder, name: str, params: dict) -> None:
    """A finished study's summary, as `tune` saves it."""
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"study": name, "n_trials": 12, "best_params": params, "budget": TuningBudget(n_trials=12).model_dump(),
               "convergence": convergence([80.0, 81.0])}
    tuned_path(folder, name).write_text(json.dumps(summary))


# The budget

def test_the_cap_on_finished_trials():
    assert TuningBudget(n_trials=7).trial_cap == 7                                   # counting finished trials
    assert TuningBudget(n_trials=7, count="completed").trial_cap == 21               # three times by default
    assert TuningBudget(n_trials=7, count="completed", max_trials=9).trial_cap == 9


def test_the_budget_s_line_names_every_rule_that_is_on_and_no_other():
    assert SECOND_PROTOCOL.describe() == (
        "20 completed trials per study (pruned ones extra, at most 40 in all); TPE sampler (seed per study, 6 random "
        "start-up trials); none pruner on the running best; objective: best-epoch validation mAP on clean labels; "
        "trials trained with seed 100; the defaults (and the paper's values) are the first trials; a range whose "
        "winner sits at its edge widens (at most 2 times, half a budget each); the 3 best settings re-trained on "
        "seeds 100, 101, 102, the best mean wins; a study still improving after its budget gets a second one, once")
    assert TuningBudget(n_trials=12, seed=7, objective="observed").describe() == (
        "12 finished trials per study; TPE sampler (seed 7, 10 random start-up trials); median pruner on the running "
        "best; objective: best-epoch validation mAP on observed labels; trials trained with seed 7")
    assert TuningBudget(sampler="grid", n_trials=8, seed=5).describe() == (
        "every one of the 8 settings of the grid, unpruned; objective: best-epoch validation mAP on clean labels; "
        "trials trained with seed 5")


def test_a_budget_is_checked_field_by_field():
    for bad in ({"n_trials": 0}, {"startup_trials": -1}, {"widen_edges": 6}, {"confirm_top": 0},
                {"confirm_seeds": list(range(11))}, {"count": "all"}, {"n_trials": "20"}, {"unknown": 1}):
        with pytest.raises(ValueError):
            TuningBudget(**bad)


# Narrowing and overrides

def test_narrowing_keeps_what_is_not_given_and_changes_what_is():
    grid = Grid(["digits-mosaic", "fashion-mosaic"], ["an", "ls"], [0, 1], overrides={"epochs": 2},
                data_dirs={"fashion-mosaic": "/f"}, label_seed=5)
    assert grid.narrow() == grid
    narrowed = grid.narrow(datasets=["digits-mosaic"], variants=["ls"], seeds=[], overrides={"lr": "0.1"},
                           data="/d", device="cpu", label_seed=0, recipes=["defaults"], weights="none")
    assert narrowed.datasets == ["digits-mosaic"] and narrowed.variants == ["ls"]
    assert narrowed.seeds == []                                          # an empty list is kept, not the grid's
    assert narrowed.label_seed == 0                                      # 0 is a label seed, not "not given"
    assert narrowed.overrides == {"epochs": 2, "lr": "0.1"}
    assert narrowed.data_dirs == {"fashion-mosaic": "/f", "digits-mosaic": "/d"}  # --data: the chosen datasets only
    assert (narrowed.device, narrowed.recipes, narrowed.weights) == ("cpu", ["defaults"], "none")
    assert grid.narrow(overrides={"epochs": 3}).overrides == {"epochs": 3}        # --set wins over the grid file
    assert grid.narrow(data="/x").data_dirs == {"fashion-mosaic": "/x", "digits-mosaic": "/x"}


def test_each_override_keeps_where_it_was_set():
    grid = Grid(["digits-mosaic"], ["an"], [0], overrides={"epochs": 2, "lr": 0.1})
    assert (grid.origin_of("epochs"), grid.origin_of("batch_size")) == ("grid file", None)
    narrowed = grid.narrow(overrides={"lr": "0.2", "batch_size": "8"})
    assert narrowed.override_origins == {"lr": "--set", "batch_size": "--set"}
    assert [narrowed.origin_of(name) for name in ("epochs", "lr", "batch_size")] == ["grid file", "--set", "--set"]
    assert narrowed.narrow(seeds=[1]).override_origins == narrowed.override_origins      # kept by a later narrowing


def test_an_override_is_known_to_some_variant_or_refused_with_the_closest_name():
    grid = Grid(["digits-mosaic"], ["an", "ll-r+boostlu"], [0])
    grid.check_overrides(["lr", "delta_rel", "boost_alpha", "epochs"], "--set")
    with pytest.raises(UserError) as raised:
        grid.check_overrides(["lr", "delta_rl"], "--set")
    assert str(raised.value).startswith("--set delta_rl: no variant of this grid has that hyperparameter (did you "
                                        "mean 'delta_rel'?); valid here: backbone, batch_size, boost_alpha, delta_rel")
    with pytest.raises(UserError) as raised:
        Grid(["digits-mosaic"], ["an"], [0]).check_overrides(["zzzz"], "benchmark file g.toml: [overrides]")
    assert str(raised.value) == ("benchmark file g.toml: [overrides] zzzz: no variant of this grid has that "
                                 "hyperparameter; valid here: backbone, batch_size, epochs, freeze_backbone, "
                                 "head_lr_mult, image_size, lr, lr_schedule")


def test_the_accepted_names_are_the_trainer_s_and_each_method_s():
    trainer = {"backbone", "batch_size", "epochs", "freeze_backbone", "head_lr_mult", "image_size", "lr",
               "lr_schedule"}
    assert accepted_hparams(["an"]) == trainer
    assert accepted_hparams(["an+boostlu"]) == trainer | {"boost_alpha"}
    assert accepted_hparams(["an", "ls"]) == trainer | {"ls_coef"}
    assert accepted_hparams(["an+boostlu", "an"]) == trainer | {"boost_alpha"}   # every variant's, not the last's
    assert accepted_hparams([]) == set()


# One cell's spec

def test_a_cell_s_spec_takes_the_grid_s_options_and_its_overrides_win_over_the_recipe_s():
    grid = Grid(["voc"], ["ls"], [0], protocol="partial-0.5", label_seed=9, device="cpu",
                overrides={"epochs": 2, "lr": 0.05}, data_dirs={"voc": "/data"}, weights="none")
    spec = grid.base_spec("voc", "ls", 3, {"lr": 0.2, "ls_coef": 0.3}, "tuned")
    expected = make_spec("voc", "ls", 3, overrides={"epochs": 2, "lr": 0.05, "ls_coef": 0.3},
                         protocol="partial-0.5", label_seed=9, device="cpu", data_dir="/data", weights="none",
                         recipe="tuned")
    assert spec == expected
    assert grid.base_spec("voc", "ls", 3).recipe == "defaults"
    assert grid.base_spec("voc", "ls", 3).lr == 0.05


def test_the_linear_setting_on_a_backbone_given_as_none_is_refused():
    spec = make_spec("digits-mosaic", "an", 0, device="cpu")
    assert refuse_unkeyed_features(spec) is spec
    assert refuse_unkeyed_features(dataclasses.replace(spec, weights="none")).weights == "none"
    assert refuse_unkeyed_features(dataclasses.replace(spec, freeze_backbone=True)).freeze_backbone
    for change in ({"freeze_backbone": True}, {"linear_init": True}):
        with pytest.raises(UserError, match=r"^an(\+li)?: the linear setting and LinearInit need a pretrained"):
            refuse_unkeyed_features(dataclasses.replace(spec, weights="none", **change))


# Studies and recipes

def test_each_tuned_recipe_names_its_own_study_and_the_paper_s_grid_study_another():
    grid = Grid(["digits-mosaic", "voc"], ["an", "ll-r"], [0], device="cpu", data_dirs={"voc": "/data"})
    tuned = grid.study("digits-mosaic", "an")
    assert tuned == "pamlbench/digits-mosaic/single-positive/labels1200/an/small-cnn/12ep"
    assert grid.study("digits-mosaic", "an", recipe="tuned-observed") == tuned + "/observed"
    assert grid.study_base("digits-mosaic", "an", 100, "tuned").recipe == "defaults"
    assert grid.study_base("digits-mosaic", "an", 100, "tuned").seed == 100
    assert grid.study_base("digits-mosaic", "an", 100, "tuned-observed").recipe == "tuned-observed"
    paper = paper_recipe("voc", "ll-r")
    base = grid.study_base("voc", "ll-r", 100, "paper", paper)
    assert (base.recipe, base.batch_size, base.head_lr_mult, base.epochs) == ("paper", 16, 10.0, 10)
    assert grid.study("voc", "ll-r", paper).endswith("/paper")
    assert grid.study("voc", "ll-r", paper) == spec_study(base)


def test_the_recipes_of_a_dataset_are_the_grid_s_or_its_own():
    grid = Grid(["digits-mosaic", "voc"], ["an"], [0])
    assert grid.recipes_for("digits-mosaic") == ["tuned", "defaults"]
    assert grid.recipes_for("voc") == ["paper"]
    assert grid.narrow(recipes=["defaults"]).recipes_for("voc") == ["defaults"]


def test_each_recipe_s_values_and_their_source(tmp_path):
    grid = Grid(["digits-mosaic", "voc"], ["an", "ll-r"], [0], device="cpu", data_dirs={"voc": "/data"})
    assert grid.recipe_values("digits-mosaic", "an", "defaults", tmp_path) == ({}, {"kind": "defaults"})
    assert grid.recipe_values("digits-mosaic", "an", "tuned", tmp_path) == (
        "no tuned study for an on digits-mosaic (run `pamlbench tune --recipe tuned`)")
    assert grid.recipe_values("digits-mosaic", "an", "tuned-observed", tmp_path) == (
        "no tuned-observed study for an on digits-mosaic (run `pamlbench tune --recipe tuned-observed`)")
    save_study(tmp_path, grid.study("digits-mosaic", "an", recipe="tuned-observed"), {"lr": 0.004})
    values, source = grid.recipe_values("digits-mosaic", "an", "tuned-observed", tmp_path)
    assert values == {"lr": 0.004} and source["kind"] == "tuned"
    assert source["study"] == grid.study("digits-mosaic", "an", recipe="tuned-observed")
    assert grid.recipe_values("digits-mosaic", "an", "paper", tmp_path) == (
        "no paper recipe for an on digits-mosaic: no source paper published an there; use --recipe defaults or tuned")

    cole = paper_recipe("voc", "an")
    assert grid.recipe_values("voc", "an", "paper", tmp_path) == (
        "the cole grid study of an on voc has not run (run `pamlbench tune --recipe paper`)")
    save_study(tmp_path, grid.study("voc", "an", cole), {"batch_size": 8, "lr": 0.001})
    values, source = grid.recipe_values("voc", "an", "paper", tmp_path)
    assert values == {**cole.settings, "batch_size": 8, "lr": 0.001}
    assert source == {**cole.source_record(), "values": values, "study": grid.study("voc", "an", cole),
                      "n_trials": 12}


def test_a_paper_that_published_its_values_is_run_as_published(tmp_path):
    grid = Grid(["voc"], ["an+boostlu"], [0], device="cpu", data_dirs={"voc": "/data"})
    paper = paper_recipe("voc", "an+boostlu")
    assert not paper.search
    assert grid.recipe_values("voc", "an+boostlu", "paper", tmp_path) == (paper.settings, paper.source_record())


def test_the_cells_run_dataset_first_then_recipe_variant_and_seed_and_say_what_cannot_run(tmp_path):
    grid = Grid(["digits-mosaic"], ["an", "ls"], [0, 1], device="cpu", overrides={"epochs": 2})
    save_study(tmp_path, grid.study("digits-mosaic", "ls"), {"lr": 0.02, "ls_coef": 0.25})
    cells, skipped = grid.cells(tmp_path)
    assert skipped == ["tuned recipe: no tuned study for an on digits-mosaic (run `pamlbench tune --recipe tuned`)"]
    assert [(spec.recipe, spec.variant, spec.seed) for spec, _ in cells] == [
        ("tuned", "ls", 0), ("tuned", "ls", 1),
        ("defaults", "an", 0), ("defaults", "an", 1), ("defaults", "ls", 0), ("defaults", "ls", 1)]
    tuned_spec, tuned_source = cells[0]
    assert (tuned_spec.lr, tuned_spec.method_hparams()["ls_coef"], tuned_spec.epochs) == (0.02, 0.25, 2)
    assert tuned_source["kind"] == "tuned" and tuned_source["overrides"] == {"epochs": 2}
    assert cells[2][1] == {"kind": "defaults", "overrides": {"epochs": 2}}


def test_a_record_names_the_overrides_its_spec_uses():
    grid = Grid(["digits-mosaic"], ["an", "ls"], [0], device="cpu", overrides={"ls_coef": 0.3, "epochs": 2})
    source = {"kind": "defaults"}
    assert grid.with_overrides(source, grid.base_spec("digits-mosaic", "ls", 0)) == {
        "kind": "defaults", "overrides": {"epochs": 2, "ls_coef": 0.3}}
    assert grid.with_overrides(source, grid.base_spec("digits-mosaic", "an", 0)) == {
        "kind": "defaults", "overrides": {"epochs": 2}}                              # ls_coef is not an's
    plain = Grid(["digits-mosaic"], ["an"], [0], device="cpu")
    assert plain.with_overrides(source, plain.base_spec("digits-mosaic", "an", 0)) is source


# The grid file

def write(tmp_path, text: str | bytes):
    path = tmp_path / "grid.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_a_grid_file_is_read_into_a_grid(tmp_path):
    grid = load_grid(write(tmp_path, "datasets = ['digits-mosaic']\nvariants = ['an']\nseeds = [0, 3]\n"
                                     "recipes = ['defaults']\nlabel_seed = 4\n[overrides]\nepochs = 2\n"
                                     "[tuning]\nn_trials = 5\n"))
    assert (grid.datasets, grid.variants, grid.seeds, grid.recipes) == (["digits-mosaic"], ["an"], [0, 3],
                                                                        ["defaults"])
    assert (grid.label_seed, grid.overrides, grid.tuning.n_trials) == (4, {"epochs": 2}, 5)
    assert load_grid(write(tmp_path, "datasets = ['digits-mosaic']\nvariants = ['an']\nseeds = [0]\n")).recipes is None


def test_an_optional_dataset_joins_only_when_its_files_are_present(tmp_path):
    text = ("datasets = ['digits-mosaic']\noptional_datasets = ['voc', 'digits-mosaic']\nvariants = ['an']\n"
            "seeds = [0]\n")
    assert load_grid(write(tmp_path, text)).datasets == ["digits-mosaic"]       # no VOC files, no repeat
    prepared = tmp_path / "voc-prepared"
    prepared.mkdir()
    with_folder = text + f"[data_dirs]\nvoc = '{prepared}'\n"
    assert load_grid(write(tmp_path, with_folder)).datasets == ["digits-mosaic"]  # a folder not prepared
    (prepared / "manifest.json").write_text("{}")
    assert load_grid(write(tmp_path, with_folder)).datasets == ["digits-mosaic", "voc"]


@pytest.mark.parametrize(("text", "message"), [
    (b"\xff\xfe", "is not UTF-8 text"),
    ("datasets = [", "is not valid TOML: "),
    ("a = " + "[" * 2000 + "]" * 2000, "is nested too deeply to be a grid file"),
    ("datasets = []\nvariants = ['an']\nseeds = [0]\n", ": field 'datasets': List should have at least 1 item"),
    ("datasets = ['digits-mosaic']\nvariants = ['an']\nseeds = [0]\nextra = 1\n",
     ": field 'extra': Extra inputs are not permitted"),
    ("datasets = ['nope']\nvariants = ['an']\nseeds = [0]\n", "nope"),
    ("datasets = ['digits-mosaic']\nvariants = ['an']\nseeds = [0]\n[overrides]\nlr_schedul = 1\n",
     ": [overrides] lr_schedul: no variant of this grid has that hyperparameter (did you mean 'lr_schedule'?)"),
])
def test_a_bad_grid_file_is_refused_in_one_line_naming_the_file(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UserError) as raised:
        load_grid(path)
    assert str(raised.value).startswith(f"benchmark file {path}") or "nope" in str(raised.value)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_grid_file_that_is_a_folder_or_missing_is_refused(tmp_path):
    with pytest.raises(UserError, match="is a folder; give a TOML file$"):
        load_grid(tmp_path)
    with pytest.raises(UserError, match=r"^cannot read benchmark file .*missing\.toml: No such file or directory$"):
        load_grid(tmp_path / "missing.toml")
