"""`pamlbench records carry` and the carry-over ledger: a sample of stale records re-trained and compared bit for bit;
on agreement the records are carried (the report and `bench` take them as today's), on any difference nothing is.

The end-to-end tests edit a method plugin, whose file is hashed into the code version like a module of `bench`:
first without changing its behaviour (a comment), then with a real change of one constant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import TEST_PLUGINS, write_grid

from bench.errors import UserError
from bench.execute.carry import first_difference, sample, stale_records
from bench.execute.identity import plugin_code_version
from bench.execute.ledger import LEDGER_NAME, Ledger, LedgerEntry, read_ledger
from bench.execute.workspace import Workspace

CPU1 = {"device": "cpu", "isa": "AVX512", "threads": 1}
PROBE = '''"""A method for the carry tests: assume negative, its loss scaled by SCALE."""

from bench import Method
from bench.losses import assume_negative_loss

SCALE = 1.0


class CarryProbe(Method):
    name = "carry-probe"
    summary = "assume negative with a scaled loss (carry tests)"

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        return SCALE * assume_negative_loss(logits, observed)
'''


def entry(versions: dict[str, str], numerics: list[dict], sampled: tuple[str, ...] = ("0123456789abcdef",)) -> dict:
    return {"format": 1, "date": "2026-12-04T00:00:00+00:00", "git_commit": "unknown", "versions": versions,
            "numerics": numerics, "sampled": list(sampled), "records": 1, "all": False}


def test_the_ledger_resolves_a_version_only_on_the_numerics_it_was_proven_on():
    ledger = Ledger((LedgerEntry.model_validate(entry({"bbbbbbbbbbbb": "aaaaaaaaaaaa"}, [CPU1])),))
    assert ledger.resolve("bbbbbbbbbbbb", CPU1) == "aaaaaaaaaaaa"
    assert ledger.resolve("bbbbbbbbbbbb", {**CPU1, "threads": 2}) == "bbbbbbbbbbbb"  # not proven on 2 threads
    assert ledger.resolve("cccccccccccc", CPU1) == "cccccccccccc"
    later = LedgerEntry.model_validate(entry({"bbbbbbbbbbbb": "dddddddddddd"}, [CPU1]))
    assert Ledger((*ledger.entries, later)).resolve("bbbbbbbbbbbb", CPU1) == "dddddddddddd"  # the latest entry


def test_a_corrupt_ledger_is_refused_naming_its_line(tmp_path):
    good = json.dumps(entry({"bbbbbbbbbbbb": "aaaaaaaaaaaa"}, [CPU1]))
    (tmp_path / LEDGER_NAME).write_text(good + "\n" + good.replace('"all": false', '"all": "maybe"') + "\n")
    with pytest.raises(UserError, match=r"line 2: field 'all'"):
        read_ledger(tmp_path)
    (tmp_path / LEDGER_NAME).write_text(good + "\n{not json\n")
    with pytest.raises(UserError, match="line 2: not a JSON object"):
        read_ledger(tmp_path)
    (tmp_path / LEDGER_NAME).write_text(good + "\n")
    assert read_ledger(tmp_path).resolve("bbbbbbbbbbbb", CPU1) == "aaaaaaaaaaaa"


def record(variant: str, seed: int, recipe: str = "tuned", dataset: str = "digits-mosaic") -> dict:
    method = variant.split("+")[0]
    return {"run_key": f"{abs(hash((variant, seed, recipe, dataset))):016x}"[:16], "variant": variant,
            "spec": {"dataset": dataset, "method": method, "seed": seed, "recipe": recipe,
                     "boostlu_train": "+boostlu" in variant, "boostlu_infer": "+boostlu" in variant}}


def test_the_sample_takes_one_cell_per_stratum_and_rotates_the_seeds():
    strata = [("an", "tuned"), ("an", "defaults"), ("an+boostlu", "tuned"), ("ll-r", "tuned"), ("ll-r", "defaults")]
    records = [record(variant, seed, recipe) for variant, recipe in strata for seed in range(5)]
    chosen = sample(records)
    assert len(chosen) == len(strata)
    assert {(r["variant"], r["spec"]["recipe"]) for r in chosen} == set(strata)
    assert sorted(r["spec"]["seed"] for r in chosen) == [0, 1, 2, 3, 4]  # five strata draw all five seeds
    assert sample(list(reversed(records))) == chosen  # the order the records come in does not matter
    other_dataset = [record("an", seed, "tuned", "fashion-mosaic") for seed in range(5)]
    assert len(sample(records + other_dataset)) == len(strata) + 1


def test_the_first_difference_is_named_by_its_path_and_floats_compare_bit_for_bit():
    stored = {"curve": [{"epoch": 1, "val_map": 50.0}, {"epoch": 2, "val_map": 61.25}], "test_map": 60.0,
              "per_class_ap": {"a": 1.0}}
    assert first_difference(stored, json.loads(json.dumps(stored))) is None
    nudged = json.loads(json.dumps(stored))
    nudged["curve"][1]["val_map"] = 61.25000000000001
    assert first_difference(stored, nudged) == "curve[1].val_map: 61.25 in the record, 61.25000000000001 now"
    assert first_difference(stored, {**stored, "per_class_ap": {"a": 1.0, "b": 2.0}}).startswith("per_class_ap.b:")
    assert first_difference(stored, {**stored, "curve": stored["curve"][:1]}) == "curve: 2 entries in the record, 1 now"
    assert first_difference({"n": 1}, {"n": 1.0}) == "n: 1 in the record, 1.0 now"


def test_two_stored_versions_for_one_of_todays_are_refused(tmp_path, mini_mosaic):
    records = []
    for seed, version in ((0, "aaaaaaaaaaaa"), (1, "cccccccccccc")):
        one = record("an", seed, dataset=mini_mosaic)
        records.append({**one, "code_version": version, "numerics": CPU1})
    today = plugin_code_version("an", mini_mosaic)
    with pytest.raises(UserError, match=f"two code versions .* carried to today's {today}"):
        stale_records(records, Workspace(results=tmp_path))
    assert stale_records(records[:1], Workspace(results=tmp_path)) == (records[:1], {today: "aaaaaaaaaaaa"})


# --- end to end ----------------------------------------------------------------------------------------------------


def cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PAMLBENCH_PLUGIN_PATH": os.pathsep.join([str(TEST_PLUGINS), str(root / "plugins")])}
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)


def snapshot(results: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in results.glob("*.json")}


@pytest.mark.slow
def test_a_comment_is_carried_and_a_changed_constant_is_refused(tmp_path, cache_root):
    root = tmp_path
    plugin = root / "plugins" / "methods" / "carry_probe.py"
    plugin.parent.mkdir(parents=True)
    plugin.write_text(PROBE)
    write_grid(root / "grid.toml", ["carry-probe", "an"], [0, 1], epochs=1)
    common = ["--results", "results", "--cache", str(cache_root)]
    trained = cli(root, "bench", "--config", "grid.toml", *common, "--no-report", "--no-tracking", "--jobs", "1",
                  "--threads", "1")
    assert trained.returncode == 0, trained.stderr
    before = snapshot(root / "results")
    assert len(before) == 4

    done = cli(root, "records", "carry", *common, "--jobs", "1")
    assert done.returncode == 0, done.stderr
    assert "every record" in done.stdout and "nothing to carry" in done.stdout
    assert not (root / "results" / LEDGER_NAME).exists()

    plugin.write_text(PROBE.replace("SCALE = 1.0\n", "SCALE = 1.0  # the loss as AN's\n"))  # no number changes
    plan = cli(root, "bench", "--config", "grid.toml", *common, "--plan")
    assert "2 recorded, 2 to train" in plan.stdout, plan.stdout  # the probe's two records are stale now
    carried = cli(root, "records", "carry", *common, "--jobs", "1")
    assert carried.returncode == 0, carried.stderr
    assert "2 record(s) carried" in carried.stdout and "1 re-trained cell(s) agree bit for bit" in carried.stdout
    ledger = read_ledger(root / "results")
    assert len(ledger.entries) == 1 and ledger.entries[0].records == 2 and len(ledger.entries[0].sampled) == 1
    assert ledger.entries[0].numerics == [{**json.loads((root / "results" / f"{ledger.entries[0].sampled[0]}.json")
                                                      .read_text())["numerics"]}]

    again = cli(root, "bench", "--config", "grid.toml", *common, "--no-tracking", "--jobs", "1", "--threads", "1",
                "--out", "leaderboard.md")
    assert again.returncode == 0, again.stderr
    assert "val mAP" not in again.stdout  # nothing trained: the carried records are today's
    assert snapshot(root / "results") == before
    board = (root / "leaderboard.md").read_text()
    assert "| carry-probe" in board and "made by other code versions" not in board

    plugin.write_text(PROBE.replace("SCALE = 1.0\n", "SCALE = 1.5\n"))  # a real change of one constant
    refused = cli(root, "records", "carry", *common, "--jobs", "1")
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "records carry: mini-mosaic carry-probe seed" in lines[0] and "differs under today's code: " in lines[0]
    assert "in the record" in lines[0] and "nothing carried" in lines[0]
    assert len(read_ledger(root / "results").entries) == 1  # nothing written
    assert snapshot(root / "results") == before


def test_the_committed_records_carry_today_s_plugin_code_version():
    """(Not in mutation testing's selection: mutmut's instrumented copy of the code has another code version.)
    The one helper that names today's code version of a (method, dataset) before the ledger: the version the
    committed records were trained and keyed under, distinct per plugin file, and a one-line error for a plugin that
    is gone."""
    project = Path(__file__).resolve().parent.parent
    records = [json.loads(path.read_text()) for path in sorted((project / "results").glob("*.json"))[:40]]
    ledger = Workspace(results=project / "results").ledger()
    assert records
    for record in records:
        spec = record["spec"]
        today = plugin_code_version(spec["method"], spec["dataset"])
        assert record["code_version"] == ledger.resolve(today, record["numerics"])
    assert plugin_code_version("an", "digits-mosaic") != plugin_code_version("ls", "digits-mosaic")
    assert plugin_code_version("an", "digits-mosaic") != plugin_code_version("an", "fashion-mosaic")
    with pytest.raises(UserError):
        plugin_code_version("no-such-method", "digits-mosaic")
