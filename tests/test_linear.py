"""Cole et al.'s linear setting (`freeze_backbone`: the head on cached pooled features) and LinearInit (`+li`): the
feature cache is reused and checked, the linear model is the end-to-end classifier with the backbone fixed, and
LinearInit keeps both stages in one record."""

from pathlib import Path

import pytest
import torch
from fixtures import my_images_folder, voc_tree

from bench import features
from bench.cli.main import main
from bench.errors import UserError
from bench.features import cache_path
from bench.model import build_backbone
from bench.records import read_records
from bench.spec import make_spec
from bench.trainer import Trainer

pytest_plugins = ["test_contract", "test_readme_examples"]


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


def linear_cache_file(cache: Path, dataset: str = "tiny", variant: str = "an", seed: int = 0,
                      overrides: dict | None = None, **options) -> Path:
    """The feature cache file of a linear run of `variant` on `dataset` (make_spec's `options`)."""
    spec = make_spec(dataset, variant, seed, overrides={"freeze_backbone": True, **(overrides or {})}, **options)
    return cache_path(spec, cache)


def test_the_feature_cache_is_named_by_what_the_features_depend_on_and_by_nothing_else(tiny_plugin, tmp_path):
    base = linear_cache_file(tmp_path)
    assert base.parent == tmp_path / "features" and base.name.startswith("tiny-small-cnn-")
    shared = [linear_cache_file(tmp_path, variant="role"), linear_cache_file(tmp_path, overrides={"lr": 0.01}),
              linear_cache_file(tmp_path, label_seed=7), linear_cache_file(tmp_path, protocol="partial-0.5")]
    assert shared == [base] * 4                       # the method, its settings and the label draw share features
    others = [linear_cache_file(tmp_path, seed=1),     # another random backbone
              linear_cache_file(tmp_path, overrides={"image_size": 32}),
              linear_cache_file(tmp_path, overrides={"backbone": "resnet50"})]
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if threads == 1 else 1)
    try:
        others.append(linear_cache_file(tmp_path))      # other numerics: the last bits of the features differ
    finally:
        torch.set_num_threads(threads)
    assert len({base, *others}) == 5
    for build, same in (("2.14.1+cpu", True), ("2.13.0+cu128", False)):  # the version counts, not the build tag
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch, "__version__", "2.14.1+cu128")
            reference = linear_cache_file(tmp_path)
            patch.setattr(torch, "__version__", build)
            assert (linear_cache_file(tmp_path) == reference) is same

    resnet = {"overrides": {"backbone": "resnet50"}}
    files = {name: tmp_path / f"{name}.pth" for name in ("first", "copy", "other")}
    for name, content in (("first", b"weights 1"), ("copy", b"weights 1"), ("other", b"weights 2")):
        files[name].write_bytes(content)
    by_file = {name: linear_cache_file(tmp_path, weights=str(path), **resnet) for name, path in files.items()}
    assert by_file["first"] == by_file["copy"] != by_file["other"]      # a weights file by its content
    assert linear_cache_file(tmp_path, seed=1, weights=str(files["first"]), **resnet) == by_file["first"]
    imagenet = [linear_cache_file(tmp_path, seed=seed, weights="imagenet", **resnet) for seed in (0, 1)]
    assert imagenet[0] == imagenet[1] not in by_file.values()        # with weights, the seed does not matter


def test_the_feature_cache_of_data_read_from_a_folder_is_named_by_the_folder_s_content(readme_plugins, tmp_path):
    folders = [my_images_folder(tmp_path / "first"), my_images_folder(tmp_path / "copy"),
               my_images_folder(tmp_path / "other", seed=1)]
    first, copy, other = (linear_cache_file(tmp_path, "my-images", data_dir=str(folder)) for folder in folders)
    assert first == copy != other


def test_the_features_are_those_of_the_backbone_with_the_spec_s_weights(tiny_plugin, tmp_path):
    from torchvision.models import resnet50

    weights = tmp_path / "resnet50.pth"
    with torch.random.fork_rng():
        torch.manual_seed(5)
        torch.save(resnet50().state_dict(), weights)
    spec = make_spec("tiny", "an", 0, overrides={"freeze_backbone": True, "backbone": "resnet50", "epochs": 1},
                     weights=str(weights))
    trainer = Trainer(spec, tmp_path, progress=False)
    backbone = build_backbone("resnet50", 1, str(weights)).to(memory_format=torch.channels_last).eval()
    expected = features.extract(backbone, trainer.data.train_images, trainer.data, trainer.device)
    assert torch.equal(trainer.features.train, expected)


def test_the_linear_model_is_the_classifier_on_pooled_features_of_the_frozen_backbone(tiny_plugin, tmp_path):
    spec = make_spec("tiny", "an", 0, overrides={"freeze_backbone": True, "epochs": 1})
    trainer = Trainer(spec, tmp_path, progress=False)
    trainer.run()
    full = make_spec("tiny", "an", 0, overrides={"epochs": 1})
    whole = Trainer(full, tmp_path, progress=False)
    with torch.random.fork_rng():                               # the backbone the cache was extracted with
        torch.manual_seed(0)
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
