"""`make perf` is a benchmark, not a test, but its measuring code must keep up with the harness it measures: the
trainer-versus-bare-loop section runs here on mini-mosaic with one repeat."""

import importlib.util
from pathlib import Path

from bench.spec import make_spec
from bench.trainer import Trainer

PERF_SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "perf.py"


def test_the_trainer_versus_bare_loop_section_runs_and_prints_its_ratio(mini_mosaic, cache_root, capsys):
    spec = importlib.util.spec_from_file_location("perf", PERF_SCRIPT)
    perf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(perf)
    trainer = Trainer(make_spec(mini_mosaic, "an", 0, overrides={"epochs": 1}), cache_root, progress=False)
    batches, targets = perf.epoch_batches(trainer)
    assert sum(len(batch) for batch in batches) == len(trainer.data.train_images) == sum(len(t) for t in targets)
    perf.harness_vs_bare(trainer, "mini", repeats=1)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| mini")]
    assert len(rows) == 3 and "harness / bare" in rows[2]
    assert 0 < float(rows[2].split("|")[2]) < 10
