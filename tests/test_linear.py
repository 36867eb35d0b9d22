"""Cole et al.'s linear setting (`freeze_backbone`: the head on cached pooled features) and LinearInit (`+li`): the
feature cache is reused and checked, the linear model is the end-to-end classifier with the backbone fixed, and
LinearInit keeps both stages in one record."""

import pytest
import torch
from fixtures import voc_tree

from bench import features
from bench.cli import main
from bench.errors import UserError
from bench.features import cache_path
from bench.records import read_records
from bench.spec import make_spec
from bench.trainer import Trainer

pytest_plugins = ["test_contract"]


def test_a_second_linear_run_reuses_the_cache_and_a_damaged_cache_is_rebuilt(tiny_plugin, tmp_path):
    spec = make_spec("tiny", "an", 0, overrides={"freeze_backbone": True, "epochs": 3})
    before = features.EXTRACTIONS["count"]
    first = Trainer(spec, tmp_path, progress=False).run()
    assert features.EXTRACTIONS["count"] == before + 1
    second = Trainer(spec, tmp_path, progress=False).run()
    assert features.EXTRACTIONS["count"] == before + 1          # the backbone did not run again
    assert second["curve"] == first["curve"] and second["features"] == first["features"]
    path = cache_path(spec, tmp_path)
    path.write_bytes(path.read_bytes()[:-100])                  # a truncated cache file
    third = Trainer(spec, tmp_path, progress=False).run()
    assert features.EXTRACTIONS["count"] == before + 2 and third["curve"] == first["curve"]


def test_the_linear_model_is_the_classifier_on_pooled_features_of_the_frozen_backbone(tiny_plugin, tmp_path):
    spec = make_spec("tiny", "an", 0, overrides={"freeze_backbone": True, "epochs": 1})
    trainer = Trainer(spec, tmp_path, progress=False)
    trainer.run()
    full = make_spec("tiny", "an", 0, overrides={"epochs": 1})
    whole = Trainer(full, tmp_path, progress=False)
    with torch.random.fork_rng():                               # the backbone the cache was extracted with
        torch.manual_seed(0)
        from bench.model import build_backbone

        backbone = build_backbone("small-cnn", 1, None).eval()
    whole.model.backbone.load_state_dict(backbone.state_dict())
    whole.model.cam_head.load_state_dict(trainer.model.cam_head.state_dict())
    whole.model.eval()
    scores = whole.predict(whole.data.test.images)
    assert torch.allclose(scores, trainer.predict(trainer.test_inputs), atol=1e-5)


def test_linear_init_keeps_both_stages_and_starts_from_the_linear_stages_best_head(tiny_plugin, tmp_path):
    spec = make_spec("tiny", "role+li", 0, overrides={"epochs": 2, "li_epochs": 3, "li_lr": 1e-2})
    assert (spec.linear_init, spec.li_epochs, spec.li_lr, spec.variant) == (True, 3, 1e-2, "role+li")
    trainer = Trainer(spec, tmp_path, progress=False)
    stage = trainer.run_linear_stage()
    assert len(stage["curve"]) == 3 and stage["lr"] == 1e-2
    best = stage["curve"][stage["best_epoch"] - 1]
    assert best["val_map"] == max(point["val_map"] for point in stage["curve"])
    trainer.model.eval()
    assert mean_val_map(trainer) == pytest.approx(best["val_map"], abs=1e-4)   # its head is the stage's best
    result = Trainer(spec, tmp_path, progress=False).run()
    assert result["linear_stage"]["curve"] == stage["curve"] and len(result["curve"]) == 2


def mean_val_map(trainer: Trainer) -> float:
    from bench.trainer import mean_ap

    return mean_ap(trainer.predict(trainer.val_inputs).cpu().numpy(), trainer.data.val_clean)


@pytest.mark.parametrize("variant, overrides, message", [
    ("an+boostlu", {"freeze_backbone": True}, "freeze_backbone trains on pooled features"),
    ("role+li", {"freeze_backbone": True}, "freeze_backbone trains on pooled features"),
    ("role+li+boostlu", {}, "LinearInit and BoostLU are not combined"),
    ("role", {"li_epochs": 5}, "applies only to LinearInit variants"),
])
def test_settings_that_do_not_combine_are_refused(variant, overrides, message):
    with pytest.raises(UserError, match=message):
        make_spec("digits-mosaic", variant, 0, overrides=overrides)


@pytest.mark.slow
def test_linear_and_linear_init_on_the_voc_fixture(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    voc_tree(tmp_path / "raw", train=40, val=12)
    assert main(["data", "prepare", "voc", "--raw", "raw", "--out", "voc"]) == 0
    small = ["--set", "backbone=small-cnn", "--set", "image_size=32", "--set", "epochs=1", "--no-tracking",
             "--results", "results", "--cache", "cache", "--dataset", "voc", "--data", "voc"]
    assert main(["run", "--method", "an", "--set", "freeze_backbone=true", *small]) == 0
    assert main(["run", "--method", "ls+li", "--set", "li_epochs=2", *small]) == 0
    linear, init = sorted(read_records(tmp_path / "results"), key=lambda r: r["variant"])
    assert linear["spec"]["freeze_backbone"] and len(linear["features"]) == 16
    assert init["variant"] == "ls+li" and len(init["linear_stage"]["curve"]) == 2
    assert init["linear_stage"]["lr"] == 1e-4                   # Cole et al.'s linear-stage rate is the default
