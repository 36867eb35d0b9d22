"""The plugin contract, checked on every registered method and dataset (as `benchopt test` runs every solver): a new
plugin is tested here without anyone adding its name to a list."""

import math

import pytest
import torch
from fixtures import coco_tree, cub_tree, my_images_folder, nuswide_tree, openimages_tree, voc_tree

import bench
from bench import TrainState, registry
from bench.cli.main import main
from bench.data.preparation import prepare
from bench.prepared import PreparedDataset
from bench.spec import TRAINING_HPARAMS, make_spec
from bench.trainer import Trainer

TINY = '''
import numpy as np
import torch
from bench import Dataset, Split, Splits


class Tiny(Dataset):
    name = "tiny"
    summary = "test plugin: 64 random 16x16 images, 4 classes"
    train_flip = True
    defaults = {"batch_size": 16}

    def load(self, data_dir, cache_dir, image_size=None):
        rng = np.random.RandomState(0)

        def split(n):
            labels = (rng.rand(n, 4) < 0.4).astype(np.float32)
            labels[np.arange(n), rng.randint(0, 4, n)] = 1
            return Split(torch.from_numpy(rng.randint(0, 255, (n, 1, 16, 16)).astype(np.uint8)), labels)

        return Splits(split(64), split(32), split(32), ["a", "b", "c", "d"], (0.5,), (0.25,))

    def fingerprint(self, data_dir, cache_dir):
        return "tiny-v1"
'''


OFFICIAL_FIXTURES = {"voc": voc_tree, "coco": coco_tree, "cub": cub_tree, "nuswide": nuswide_tree,
                     "openimages": openimages_tree}
"""Small trees in each real dataset's official download format (tests/fixtures.py)."""

DATA_FOLDERS = {"my-images": my_images_folder}
"""Writers of a small --data folder for each dataset that reads its folder as it is, not prepared from official files
(the README's example, `my-images`)."""


@pytest.fixture(scope="module")
def tiny_plugin(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    (root / "datasets").mkdir()
    (root / "datasets" / "tiny.py").write_text(TINY)
    patch = pytest.MonkeyPatch()
    patch.setenv("PAMLBENCH_PLUGIN_PATH", str(root))
    registry.datasets.cache_clear()
    yield root
    patch.undo()
    registry.datasets.cache_clear()


VARIANTS = [f"{name}{suffix}" for name in registry.list_names("methods") for suffix in ("", "+boostlu")]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_method_trains_a_short_run(variant, tiny_plugin, tmp_path):
    result = Trainer(make_spec("tiny", variant, 0, overrides={"epochs": 6}), tmp_path, progress=False).run()
    assert len(result["curve"]) == 6 and set(result["selections"]) == {"clean", "observed", "last"}
    assert all(math.isfinite(point["train_loss"]) for point in result["curve"])
    assert 0 <= result["test_map"] <= 100


@pytest.mark.parametrize("name", registry.list_names("methods"))
def test_every_method_loss_is_finite_with_gradients_and_its_state_round_trips(name):
    generator = torch.Generator().manual_seed(0)
    observed = (torch.rand(20, 5, generator=generator) < 0.3).float()
    observed[:, 0] = 1
    state = TrainState(observed=observed.clone(), epochs=6, expected_positives=1.5)
    method = bench.load_method(name)
    method.setup(state)
    logits = torch.randn(8, 5, generator=generator, requires_grad=True)
    indices = torch.arange(8)
    for epoch in (1, 3):
        loss = method.batch_loss(logits, state.observed[indices], epoch=epoch, indices=indices)
        assert loss.dim() == 0 and torch.isfinite(loss)
        (gradient,) = torch.autograd.grad(loss, logits)
        assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    saved = method.state_dict()
    fresh = bench.load_method(name)
    fresh.setup(TrainState(observed=observed.clone(), epochs=6, expected_positives=1.5))
    fresh.load_state_dict(saved)
    again = fresh.state_dict()
    assert saved.keys() == again.keys() and all(torch.equal(saved[k], again[k]) for k in saved)


@pytest.mark.parametrize("name", registry.list_names("methods"))
def test_every_method_is_listed_with_its_hyperparameters(name, capsys):
    assert main(["list", "methods", name]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{name} ") and registry.method_class(name).summary in out
    for hp in registry.method_class(name).hparams:
        assert f"   {hp} = " in out


def check_dataset_contract(name: str, capsys, cache_root, tmp_path) -> None:
    """Dataset `name`'s declarations, its refusal without --data where it needs one, and what `load` returns on
    its fixture data (an official tree prepared, or a --data folder written as it is)."""
    plugin = registry.dataset_class(name)
    assert plugin.summary and set(plugin.defaults) <= set(TRAINING_HPARAMS)
    assert isinstance(plugin.available(None), bool)
    assert main(["list", "datasets"]) == 0 and name in capsys.readouterr().out
    data_dir = None
    if plugin.needs_data_dir:
        with pytest.raises(bench.UserError, match="needs --data"):
            make_spec(name, "an", 0)
        data_dir = tmp_path / "data"
        if issubclass(plugin, PreparedDataset):
            assert name in OFFICIAL_FIXTURES, f"dataset {name} needs a fixture tree in the official format"
            OFFICIAL_FIXTURES[name](tmp_path / "raw")
            prepare(registry.load_dataset(name), tmp_path / "raw", data_dir)
            assert not plugin.available(None) and plugin.available(str(data_dir))
        else:
            assert name in DATA_FOLDERS, f"dataset {name} needs a writer of a small --data folder in DATA_FOLDERS"
            DATA_FOLDERS[name](data_dir)
    spec = make_spec(name, "an", 0, data_dir=str(data_dir) if data_dir else None)
    assert spec.epochs == plugin.defaults.get("epochs", TRAINING_HPARAMS["epochs"].default)
    if plugin.available(str(data_dir) if data_dir else None):
        size = 16 if data_dir else None
        splits = plugin().load(data_dir, cache_root / "data", size)
        allowed = {-1, 0, 1} if splits.annotated is not None else {0, 1}
        for split in (splits.train, splits.val, splits.test):
            assert split.images[torch.arange(2)].dtype == torch.uint8 and split.images.shape[0] == len(split.labels)
            assert split.labels.shape[1] == splits.num_classes and set(map(float, split.labels.ravel())) <= allowed
        fingerprint = plugin().fingerprint(data_dir, cache_root / "data")
        assert fingerprint == plugin().fingerprint(data_dir, cache_root / "data")


@pytest.mark.parametrize("name", registry.list_names("datasets"))
def test_every_dataset_declares_a_valid_contract(name, capsys, cache_root, tmp_path):
    check_dataset_contract(name, capsys, cache_root, tmp_path)


class StopAfter(Exception):
    """Raised from the epoch callback to interrupt a run, as a kill would, after its epoch checkpoint is written."""


def interrupted_overrides(variant: str) -> dict:
    """6 epochs, stopped after the 3rd; EM+APL's pseudo-labels start before the stop, so that both halves make some."""
    return {"epochs": 6, **({"apl_warmup": 2} if variant.startswith("em-apl") else {})}


SETTINGS = [(variant, {}) for variant in VARIANTS] + [
    (name, {"freeze_backbone": True}) for name in registry.list_names("methods")] + [
    (f"{name}+li", {"li_epochs": 2}) for name in registry.list_names("methods")]
"""Every variant end to end, every method in the linear setting (frozen backbone) and with LinearInit."""


@pytest.mark.parametrize("variant, setting", SETTINGS, ids=[f"{v}{'-linear' if s.get('freeze_backbone') else ''}"
                                                             for v, s in SETTINGS])
def test_resume_after_an_interruption_equals_an_uninterrupted_run(variant, setting, tiny_plugin, tmp_path):
    """Stop after epoch 3 and resume from the epoch checkpoint: the record (test mAP, per-class AP, curve,
    selections, LinearInit's linear stage), the final observed labels (corrected by LL-Cp, pseudo-labelled by
    EM+APL) and the best-epoch weights equal those of a run that was never stopped."""
    spec = make_spec("tiny", variant, 0, overrides={**interrupted_overrides(variant), **setting})
    whole = Trainer(spec, tmp_path, progress=False)
    expected = whole.run(resume_path=tmp_path / "whole.partial.pt")

    def stop(epoch, point):
        if epoch == 3:
            raise StopAfter

    with pytest.raises(StopAfter):
        Trainer(spec, tmp_path, progress=False).run(resume_path=tmp_path / "part.partial.pt", on_epoch=stop)
    resumed_trainer = Trainer(spec, tmp_path, progress=False)
    resumed = resumed_trainer.run(resume_path=tmp_path / "part.partial.pt")
    for field in ("test_map", "val_map", "best_epoch", "per_class_ap", "selections", "curve", "label_checksum",
                  "features"):
        assert resumed.get(field) == expected.get(field), field
    untimed = [{k: v for k, v in (run.get("linear_stage") or {}).items() if k != "train_seconds"}
               for run in (resumed, expected)]
    assert untimed[0] == untimed[1]
    assert torch.equal(resumed_trainer.state.observed, whole.state.observed)
    assert all(torch.equal(resumed_trainer.best_model[k], whole.best_model[k]) for k in whole.best_model)


def test_the_saved_best_weights_are_those_of_the_best_clean_epoch(tiny_plugin, tmp_path):
    """On noisy tiny data the best validation epoch is often not the last: the saved weights must be the best one's,
    and evaluating them gives that epoch's validation mAP."""
    checked_earlier_than_last = 0
    for seed in range(4):
        trainer = Trainer(make_spec("tiny", "an", seed, overrides={"epochs": 5}), tmp_path, progress=False)
        snapshots = {}

        def snapshot(epoch, point, trainer=trainer, snapshots=snapshots):
            snapshots[epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

        result = trainer.run(on_epoch=snapshot)
        best = result["selections"]["clean"]["epoch"]
        assert all(torch.equal(trainer.best_model[k], snapshots[best][k]) for k in snapshots[best])
        trainer.model.load_state_dict(trainer.best_model)
        assert trainer.evaluate()[0] == result["selections"]["clean"]["val_map"]
        checked_earlier_than_last += best < 5
    assert checked_earlier_than_last >= 1
