"""The trainer's side of the method contract: ROLE's estimates, LL-Cp's corrections, BoostLU flags, checkpoints."""

import torch

from bench.method import Method
from bench.spec import make_spec
from bench.trainer import Trainer

TWO_EPOCHS = {"epochs": 2}


def test_role_estimates_move_and_are_checkpointed(cache_root):
    trainer = Trainer(make_spec("digits-mosaic", "role", 0, overrides=TWO_EPOCHS), cache_root, progress=False)
    initial = trainer.method.estimates.detach().clone()
    trainer.run()
    best = trainer.checkpoint["method"]["estimates"]
    assert best.shape == initial.shape == (4000, 10)
    assert (best - initial).abs().mean() > 1e-3
    restored = Trainer(make_spec("digits-mosaic", "role", 0, overrides=TWO_EPOCHS), cache_root, progress=False)
    restored.method.load_state_dict(trainer.checkpoint["method"])
    assert torch.equal(restored.method.estimates.detach(), best)


def test_checkpoint_loads_with_weights_only(cache_root, tmp_path):
    trainer = Trainer(make_spec("digits-mosaic", "ll-cp", 0, overrides=TWO_EPOCHS), cache_root, progress=False)
    trainer.run()
    path = tmp_path / "best.pt"
    trainer.save_checkpoint(path)
    loaded = torch.load(path, weights_only=True)
    assert set(loaded) == {"model", "method", "observed"}
    model = Trainer(make_spec("digits-mosaic", "ll-cp", 0, overrides=TWO_EPOCHS), cache_root, progress=False).model
    model.load_state_dict(loaded["model"])


def test_ll_cp_corrects_training_labels_during_training(cache_root):
    spec = make_spec("digits-mosaic", "ll-cp", 0, overrides=TWO_EPOCHS)
    trainer = Trainer(spec, cache_root, progress=False)
    before = trainer.state.observed.clone()
    trainer.run()
    gained = (trainer.state.observed == 1) & (before == 0)
    # epoch 2 corrects ceil(32 * 10 * 0.01) = 4 entries per full batch, 125 batches
    assert 400 <= int(gained.sum()) <= 4000
    assert torch.equal(trainer.state.observed[before == 1], before[before == 1])
    ll_ct = Trainer(make_spec("digits-mosaic", "ll-ct", 0, overrides=TWO_EPOCHS), cache_root, progress=False)
    ll_ct.run()
    assert torch.equal(ll_ct.state.observed, before)


def test_boostlu_flags_reach_the_model(cache_root):
    for variant, flags in (("an", (False, False)), ("an+boostlu", (True, True)),
                           ("an+boostlu-train", (True, False)), ("an+boostlu-infer", (False, True))):
        model = Trainer(make_spec("digits-mosaic", variant, 0), cache_root, progress=False).model
        assert (model.boostlu_train, model.boostlu_infer) == flags


def test_full_oracle_sees_full_labels_and_others_observed(cache_root):
    full = Trainer(make_spec("digits-mosaic", "full", 0), cache_root, progress=False)
    an = Trainer(make_spec("digits-mosaic", "an", 0), cache_root, progress=False)
    assert full.state.observed.sum(1).mean() > 2
    assert torch.equal((an.state.observed == 1).sum(1), torch.ones(4000, dtype=torch.long))


class Recorder(Method):
    name = ""

    def __init__(self):
        super().__init__()
        self.calls = []

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        self.calls.append(("loss", epoch))
        return logits.sum() * 0

    def after_step(self, logits, observed, indices, epoch, state):
        self.calls.append(("step", epoch))

    def end_of_epoch(self, epoch, state, predict_train):
        scores = predict_train()
        assert scores.shape == state.observed.shape and 0 <= scores.min() and scores.max() <= 1
        self.calls.append(("epoch_end", epoch))


def test_hook_order(cache_root):
    trainer = Trainer(make_spec("digits-mosaic", "an", 0, overrides={"epochs": 2, "batch_size": 2000}), cache_root,
                      progress=False)
    trainer.method = Recorder()
    trainer.run()
    per_epoch = [("loss", 1), ("step", 1), ("loss", 1), ("step", 1), ("epoch_end", 1)]
    assert trainer.method.calls == per_epoch + [(kind, 2) for kind, _ in per_epoch]
