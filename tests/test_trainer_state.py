"""The trainer's side of the method contract: ROLE's estimates, LL-Cp's corrections, BoostLU flags, checkpoints."""

import pytest
import torch
from torch import nn

from bench import checkpoints
from bench.errors import UserError
from bench.method import Method
from bench.spec import make_spec
from bench.trainer import Progress, Trainer, learning_rate_factor

TWO_EPOCHS = {"epochs": 2}


def test_role_estimates_move_and_are_checkpointed(mini_mosaic, cache_root, tmp_path):
    trainer = Trainer(make_spec(mini_mosaic, "role", 0, overrides=TWO_EPOCHS), cache_root, progress=False)
    initial = trainer.method.estimates.detach().clone()
    partial = tmp_path / "run.partial.pt"
    trainer.run(resume_path=partial)
    saved = torch.load(partial, weights_only=True)["method"]["estimates"]
    assert saved.shape == initial.shape == (500, 10)
    assert (saved - initial).abs().mean() > 1e-3
    assert torch.equal(saved, trainer.method.estimates.detach())
    restored = Trainer(make_spec(mini_mosaic, "role", 0, overrides=TWO_EPOCHS), cache_root, progress=False)
    restored.method.load_state_dict({"estimates": saved})
    assert torch.equal(restored.method.estimates.detach(), saved)


def test_best_weights_load_with_weights_only(mini_mosaic, cache_root, tmp_path):
    trainer = Trainer(make_spec(mini_mosaic, "ll-cp", 0, overrides=TWO_EPOCHS), cache_root, progress=False)
    trainer.run()
    path = tmp_path / "best.pt"
    trainer.save_best(path)
    loaded = torch.load(path, weights_only=True)
    assert set(loaded) == {"model"}
    model = Trainer(make_spec(mini_mosaic, "ll-cp", 0, overrides=TWO_EPOCHS), cache_root, progress=False).model
    model.load_state_dict(loaded["model"])


def test_ll_cp_corrects_training_labels_during_training(mini_mosaic, cache_root):
    spec = make_spec(mini_mosaic, "ll-cp", 0, overrides={**TWO_EPOCHS, "delta_rel": 0.01})
    trainer = Trainer(spec, cache_root, progress=False)
    before = trainer.state.observed.clone()
    trainer.run()
    gained = (trainer.state.observed == 1) & (before == 0)
    # epoch 2 corrects ceil(32 * 10 * 0.01) = 4 entries in each of the 15 full batches (and 2 in the last, of 20)
    assert 60 <= int(gained.sum()) <= 500
    assert torch.equal(trainer.state.observed[before == 1], before[before == 1])
    ll_ct = Trainer(make_spec(mini_mosaic, "ll-ct", 0, overrides={**TWO_EPOCHS, "delta_rel": 0.02}), cache_root,
                    progress=False)
    ll_ct.run()
    assert torch.equal(ll_ct.state.observed, before)


def test_boostlu_flags_reach_the_model(mini_mosaic, cache_root):
    for variant, flags in (("an", (False, False)), ("an+boostlu", (True, True)),
                           ("an+boostlu-train", (True, False)), ("an+boostlu-infer", (False, True))):
        model = Trainer(make_spec(mini_mosaic, variant, 0), cache_root, progress=False).model
        assert (model.boostlu_train, model.boostlu_infer) == flags


def test_full_oracle_sees_full_labels_and_others_observed(mini_mosaic, cache_root):
    full = Trainer(make_spec(mini_mosaic, "full", 0), cache_root, progress=False)
    an = Trainer(make_spec(mini_mosaic, "an", 0), cache_root, progress=False)
    assert full.state.observed.sum(1).mean() > 2
    assert torch.equal((an.state.observed == 1).sum(1), torch.ones(500, dtype=torch.long))


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


def test_hook_order(mini_mosaic, cache_root):
    trainer = Trainer(make_spec(mini_mosaic, "an", 0, overrides={"epochs": 2, "batch_size": 250}), cache_root,
                      progress=False)
    trainer.method = Recorder()
    trainer.run()
    per_epoch = [("loss", 1), ("step", 1), ("loss", 1), ("step", 1), ("epoch_end", 1)]
    assert trainer.method.calls == per_epoch + [(kind, 2) for kind, _ in per_epoch]


class FixedScores(nn.Module):
    """A hand-made model: logit +2 for classes 0-4 and -2 for classes 5-9, whatever the image."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.training_logits = torch.tensor([2.0] * 5 + [-2.0] * 5)

    def forward(self, images):
        return self.scale * self.training_logits.expand(len(images), -1)


def test_memorisation_share_on_a_hand_made_model(mini_mosaic, cache_root):
    """Of the false negatives (truly positive, not observed), the share scored below 0.5 is exactly the share in
    classes 5-9, the classes this model scores negative."""
    trainer = Trainer(make_spec(mini_mosaic, "an", 0, overrides={"epochs": 1, "lr": 1e-12}), cache_root,
                      progress=False)
    labels = trainer.data.train_targets  # AN's observed labels: one positive per image
    false_negatives = trainer.data.false_negatives
    assert torch.equal(labels.sum(1), torch.ones(500))
    from bench.rundata import load_splits

    truth = torch.as_tensor(load_splits(mini_mosaic, None, str(cache_root)).train.labels)
    assert int(false_negatives.sum()) == int(truth.sum()) - 500  # every positive but the observed one
    trainer.model = FixedScores()
    _, share = trainer.train_epoch(1)
    expected = float(false_negatives[:, 5:].sum()) / float(false_negatives.sum())
    assert 0.3 < expected < 0.7 and share == pytest.approx(expected, abs=1e-6)


def test_selections_read_off_one_run():
    values = [(50.0, 30.0), (70.0, 20.0), (70.0, 35.0), (60.0, 35.0)]
    progress = Progress(curve=[{"val_map": clean, "val_map_observed": observed} for clean, observed in values])
    assert progress.selected_epoch("clean") == 2  # the first of the tied best epochs
    assert progress.selected_epoch("observed") == 3
    assert progress.selected_epoch("last") == 4


def test_learning_rate_schedules():
    assert [learning_rate_factor("constant", e, 4) for e in (1, 4)] == [1.0, 1.0]
    assert learning_rate_factor("cosine", 1, 4) == 1.0
    assert learning_rate_factor("cosine", 3, 4) == pytest.approx(0.5)
    assert 0 < learning_rate_factor("cosine", 4, 4) < 0.15


def test_one_run_records_every_epoch_and_three_selections(mini_mosaic, cache_root):
    result = Trainer(make_spec(mini_mosaic, "an", 0, overrides={"epochs": 3}), cache_root, progress=False).run()
    assert [point["epoch"] for point in result["curve"]] == [1, 2, 3]
    for point in result["curve"]:
        assert set(point) == {"epoch", "train_loss", "val_map", "val_map_observed", "test_map", "fn_memorised"}
        assert 0 <= point["fn_memorised"] <= 1
    selections = result["selections"]
    assert selections["last"]["epoch"] == 3
    assert selections["last"]["test_map"] == result["curve"][-1]["test_map"]
    clean = selections["clean"]
    assert clean["val_map"] == max(point["val_map"] for point in result["curve"])
    assert (result["test_map"], result["best_epoch"]) == (clean["test_map"], clean["epoch"])
    observed = selections["observed"]
    assert observed["val_map"] == max(point["val_map_observed"] for point in result["curve"])


def test_a_checkpoint_of_another_run_or_another_model_is_refused_in_one_line(mini_mosaic, cache_root, tmp_path):
    spec = make_spec(mini_mosaic, "an", 0, overrides={"epochs": 1})
    trainer = Trainer(spec, cache_root, progress=False)
    other_run = tmp_path / "other.partial.pt"
    checkpoints.save({"run_key_fields": {**spec.to_dict(), "seed": 1}}, other_run)
    with pytest.raises(UserError) as raised:
        trainer.restore(other_run)
    assert str(raised.value) == f"checkpoint {other_run} belongs to another run; delete it to start this run afresh"
    misfit = tmp_path / "misfit.partial.pt"
    checkpoints.save({"run_key_fields": spec.to_dict(), "model": {"layer.weight": torch.zeros(3)}}, misfit)
    with pytest.raises(UserError) as raised:
        trainer.restore(misfit)
    assert str(raised.value) == (f"checkpoint {misfit} does not fit this model (Error(s) in loading state_dict for "
                                 "CamClassifier:); delete it to start this run afresh")  # torch's first line
