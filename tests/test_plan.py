"""`--plan`: every cell with its resolved settings and their origins; nothing trained or written."""

from pathlib import Path

from test_bad_input import snapshot

from bench.cli.main import main


def test_bench_plan_names_each_value_and_its_origin(project, cache_root, capsys):
    Path("grid.toml").write_text(Path("grid.toml").read_text().replace("variants = ['an']",
                                                                       "variants = ['an', 'ls+boostlu']"))
    before = snapshot(project)
    assert main(["bench", "--config", "grid.toml", "--plan", "--set", "ls_coef=0.2", "--cache", str(cache_root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    skipped = [line for line in lines if line.startswith("bench: skipped: ")]
    assert [line.split(" (run")[0] for line in skipped] == [
        f"bench: skipped: tuned recipe: no tuned study for {v} on digits-mosaic" for v in ("an", "ls+boostlu")]
    an, boosted, summary = [line for line in lines if line not in skipped]
    assert an.startswith("digits-mosaic an seed=0 recipe=defaults [recorded]: ") and "lr=0.003 (default)" in an
    assert "epochs=1 (grid file)" in an and "batch_size=32 (default)" in an and "boost_alpha" not in an
    assert boosted.startswith("digits-mosaic ls+boostlu seed=0 recipe=defaults [to train]: ")
    assert "boost_alpha=5.0 (default)" in boosted and "ls_coef=0.2 (--set)" in boosted
    assert summary == "plan: 2 cell(s): 1 recorded, 1 to train; nothing was trained"
    assert snapshot(project) == before


def test_tune_plan_shows_the_budget_and_the_search_space(project, cache_root, capsys):
    before = snapshot(project)
    assert main(["tune", "--config", "grid.toml", "--plan", "--n-trials", "7", "--cache", str(cache_root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("tune: each study 7 finished trials per study; TPE sampler (seed 100")
    assert out[1].startswith("digits-mosaic an seed=100 recipe=defaults [to tune: searches lr in [0.0003, 0.03]]")
    assert snapshot(project) == before


def test_the_grid_keeps_where_each_override_was_set(tmp_path):
    from bench.plan.grid import load_grid

    path = tmp_path / "grid.toml"
    path.write_text("datasets = ['digits-mosaic']\nvariants = ['an']\nseeds = [0]\n[overrides]\nepochs = 2\n"
                    "batch_size = 16\n")
    grid = load_grid(path)
    assert grid.origin_of("epochs") == "grid file" and grid.origin_of("lr") is None
    narrowed = grid.narrow(overrides={"lr": "0.01", "epochs": "3"})
    assert narrowed.origin_of("lr") == "--set" and narrowed.origin_of("epochs") == "--set"  # the command line wins
    assert narrowed.origin_of("batch_size") == "grid file" and narrowed.overrides["epochs"] == "3"
    assert grid.origin_of("epochs") == "grid file"  # narrowing makes a new grid
