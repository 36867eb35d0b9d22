"""The plugin contract, checked on every registered method and dataset (as `benchopt test` runs every solver): a new
plugin is tested here without anyone adding its name to a list."""

import math

import pytest
import torch

import bench
from bench import TrainState, registry
from bench.cli import main
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


@pytest.mark.parametrize("name", registry.list_names("datasets"))
def test_every_dataset_declares_a_valid_contract(name, capsys, cache_root):
    plugin = registry.dataset_class(name)
    assert plugin.summary and set(plugin.defaults) <= set(TRAINING_HPARAMS)
    assert isinstance(plugin.available(None), bool)
    assert main(["list", "datasets"]) == 0 and name in capsys.readouterr().out
    if plugin.needs_data_dir:
        with pytest.raises(bench.UserError, match="needs --data"):
            make_spec(name, "an", 0)
        return
    spec = make_spec(name, "an", 0)
    assert spec.epochs == plugin.defaults.get("epochs", TRAINING_HPARAMS["epochs"].default)
    if plugin.available(None):
        splits = plugin().load(None, cache_root / "data")
        for split in (splits.train, splits.val, splits.test):
            assert split.images.dtype == torch.uint8 and split.images.shape[0] == len(split.labels)
            assert split.labels.shape[1] == splits.num_classes and set(map(float, split.labels.ravel())) <= {0, 1}
        assert plugin().fingerprint(None, cache_root / "data") == plugin().fingerprint(None, cache_root / "data")
