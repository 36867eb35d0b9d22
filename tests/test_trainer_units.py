"""The trainer's parts in-process, on mini-mosaic: seeding, learning rates, one epoch's loss, order, flips and
faults, prediction and evaluation, the best epoch kept, a finished run's record fields, the epoch callback and the
out-of-memory refusal."""

import dataclasses
import io
import math
import resource

import numpy as np
import pytest
import torch

from bench.errors import UserError
from bench.method import Method
from bench.metrics import average_precision
from bench.numerics import determinism_note
from bench.rundata import Evaluation, normalise
from bench.spec import make_spec
from bench.trainer import EVAL_BATCH, NumericalFault, Progress, Trainer, mean_ap, peak_memory_mb


def trainer_for(dataset, cache_root, variant="an", seed=0, **overrides):
    return Trainer(make_spec(dataset, variant, seed, overrides={"epochs": 2, **overrides}), cache_root,
                   progress=False)


class ScriptedLoss(Method):
    """A method whose batch loss is a given number per call (the model's logits times 0 keep the graph), and which
    records the batches it is shown."""

    name = ""

    def __init__(self, losses):
        super().__init__()
        self.losses = list(losses)
        self.seen = []

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        self.seen.append((epoch, indices.clone(), observed.clone()))
        return logits.sum() * 0 + self.losses[len(self.seen) - 1]


def test_a_trainer_is_seeded_by_its_spec_whatever_the_global_generator(mini_mosaic, cache_root, tmp_path,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(123)
    first = trainer_for(mini_mosaic, cache_root, seed=7)
    assert first.state.epochs == 2 and list(tmp_path.iterdir()) == []   # the data from the cache folder given
    torch.manual_seed(456)
    second = trainer_for(mini_mosaic, cache_root, seed=7)
    other = trainer_for(mini_mosaic, cache_root, seed=8)
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert any(not torch.equal(a, c) for a, c in zip(first.model.parameters(), other.model.parameters(), strict=True))
    expected_order = torch.randperm(500, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.randperm(500, generator=first.shuffle), expected_order)
    assert torch.equal(torch.randperm(500, generator=second.shuffle), expected_order)


def test_the_optimizer_is_adam_over_the_model_s_groups_at_the_spec_s_rates(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root, lr=0.002, head_lr_mult=10.0)
    assert isinstance(trainer.optimizer, torch.optim.Adam)
    assert trainer.optimizer.defaults["foreach"] is True
    assert trainer.base_lrs == [0.002, pytest.approx(0.02)]
    grouped = [id(p) for group in trainer.optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in trainer.model.parameters())
    assert trainer.progress is False and trainer.cuda is False and trainer.device == torch.device("cpu")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_only_on_a_terminal(mini_mosaic, cache_root, monkeypatch):
    monkeypatch.setattr("sys.stderr", Terminal())
    assert Trainer(make_spec(mini_mosaic, "an", 0), cache_root).progress is True
    assert Trainer(make_spec(mini_mosaic, "an", 0), cache_root, progress=False).progress is False
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert Trainer(make_spec(mini_mosaic, "an", 0), cache_root, progress=True).progress is False


def test_the_learning_rate_of_every_group_follows_the_schedule(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root, lr=0.002, head_lr_mult=10.0, lr_schedule="cosine", epochs=4)
    trainer.set_learning_rate(3)
    assert [group["lr"] for group in trainer.optimizer.param_groups] == [pytest.approx(0.001), pytest.approx(0.01)]
    trainer.set_learning_rate(1)
    assert [group["lr"] for group in trainer.optimizer.param_groups] == [0.002, pytest.approx(0.02)]
    constant = trainer_for(mini_mosaic, cache_root, lr=0.002, epochs=4)
    constant.set_learning_rate(4)
    assert [group["lr"] for group in constant.optimizer.param_groups] == [0.002, 0.002]


def test_one_epoch_visits_every_image_once_in_the_shuffled_order_and_returns_the_mean_batch_loss(
        mini_mosaic, cache_root, capsys):
    trainer = trainer_for(mini_mosaic, cache_root, seed=3, batch_size=150)
    trainer.method = ScriptedLoss([1.0, 2.0, 3.0, 10.0])
    order = torch.randperm(500, generator=torch.Generator().manual_seed(3))
    loss, share = trainer.train_epoch(1)
    assert loss == pytest.approx(4.0)  # four batches: 150, 150, 150 and 50 images
    assert [len(indices) for _, indices, _ in trainer.method.seen] == [150, 150, 150, 50]
    assert torch.equal(torch.cat([indices for _, indices, _ in trainer.method.seen]), order)
    for epoch, indices, observed in trainer.method.seen:
        assert epoch == 1 and torch.equal(observed, trainer.state.observed[indices])
    assert 0 <= share <= 1
    assert trainer.model.training
    assert capsys.readouterr().err == ""                                  # no progress bar off a terminal


def test_a_non_finite_loss_names_its_first_batch_after_the_pass(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root, seed=2, batch_size=100)
    trainer.method = ScriptedLoss([1.0, math.nan, math.inf, 1.0, 1.0])
    with pytest.raises(NumericalFault) as raised:
        trainer.train_epoch(3)
    assert len(trainer.method.seen) == 5  # the pass is finished before the fault is raised
    assert str(raised.value) == "non-finite loss in method an, dataset mini-mosaic, seed 2, epoch 3, batch 2 of 5"
    first = trainer_for(mini_mosaic, cache_root, seed=2, batch_size=100)
    first.method = ScriptedLoss([math.inf, 1.0, 1.0, 1.0, 1.0])
    with pytest.raises(NumericalFault, match=r", batch 1 of 5$"):
        first.train_epoch(1)


def test_finite_losses_with_a_non_finite_parameter_are_a_fault(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root, seed=4)
    trainer.check_finite(1, -1, 16)  # finite: nothing raised
    with torch.no_grad():
        next(trainer.model.parameters())[0].fill_(math.nan)
    with pytest.raises(NumericalFault) as raised:
        trainer.check_finite(2, -1, 16)
    assert str(raised.value) == ("non-finite parameters (a non-finite gradient) in method an, dataset mini-mosaic, "
                                 "seed 4, epoch 2")


def test_flips_are_drawn_per_image_from_the_run_s_generator_for_datasets_that_flip(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root, seed=5, batch_size=250)
    masks = []
    real_input = trainer.model_input

    def record(batch, flip_mask=None):
        masks.append(flip_mask)
        return real_input(batch, flip_mask)

    trainer.model_input = record
    trainer.train_epoch(1)
    assert masks == [None, None]  # mini-mosaic's digits are never flipped
    trainer.data = dataclasses.replace(trainer.data, train_flip=True)
    masks.clear()
    generator = torch.Generator().manual_seed(5)
    torch.randperm(500, generator=generator)
    torch.randperm(500, generator=generator)  # the orders of the epoch above and of this one
    trainer.train_epoch(2)
    expected = [torch.rand(250, generator=generator) < 0.5 for _ in range(2)]
    assert [mask.dtype for mask in masks] == [torch.bool, torch.bool]
    assert all(torch.equal(mask, want) for mask, want in zip(masks, expected, strict=True))


def test_the_model_reads_normalised_images_or_the_features_as_they_are(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root)
    images = trainer.data.train_images[:4]
    flip = torch.tensor([True, False, True, False])
    assert torch.equal(trainer.model_input(images, flip), normalise(images, trainer.data.mean, trainer.data.std, flip))
    assert torch.equal(trainer.model_input(images), normalise(images, trainer.data.mean, trainer.data.std))
    linear = trainer_for(mini_mosaic, cache_root, freeze_backbone=True)
    features = linear.train_inputs[:4]
    assert linear.model_input(features) is features
    with linear.autocast() as autocast:
        assert autocast.fast_dtype == torch.bfloat16 and not torch.is_autocast_enabled("cuda")


def test_prediction_is_the_eval_mode_sigmoid_in_chunks_of_the_evaluation_batch(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root)
    images = torch.cat([trainer.data.train_images, trainer.data.train_images[:100]])  # 600: two chunks
    assert len(images) > EVAL_BATCH
    trainer.model.train()
    scores = trainer.predict(images)
    assert not trainer.model.training
    assert scores.dtype == torch.float32 and scores.shape == (600, 10)
    with torch.no_grad():
        expected = torch.sigmoid(trainer.model(trainer.model_input(images)))
    assert torch.allclose(scores, expected, atol=1e-6)
    assert torch.equal(scores[:100], scores[500:])


def test_evaluation_reads_both_validation_targets_and_the_test_split(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root)
    clean, observed, per_class = trainer.evaluate()
    val_scores = trainer.predict(trainer.val_inputs).numpy()
    test_scores = trainer.predict(trainer.test_inputs).numpy()
    data = trainer.data
    assert clean == 100 * float(average_precision(val_scores, data.val_clean.targets, data.val_clean.known).mean())
    assert observed == mean_ap(val_scores, data.val_observed)
    assert clean != observed
    assert np.array_equal(per_class, average_precision(test_scores, data.test.targets, data.test.known))


class FixedEvaluation:
    """Stands in for Trainer.evaluate: the given (clean, observed) validation mAPs epoch after epoch."""

    def __init__(self, values):
        self.values = list(values)

    def __call__(self):
        clean, observed = self.values.pop(0)
        return clean, observed, np.full(10, clean / 100)


def test_the_best_clean_epoch_s_weights_are_kept_and_a_tie_keeps_the_earlier(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root, epochs=3)
    trainer.evaluate = FixedEvaluation([(60.0, 10.0), (70.0, 90.0), (70.0, 95.0)])
    progress = Progress()
    point = trainer.train_and_evaluate(1, progress)
    assert point == {"epoch": 1, "train_loss": point["train_loss"], "val_map": 60.0, "val_map_observed": 10.0,
                     "test_map": pytest.approx(60.0), "fn_memorised": point["fn_memorised"]}
    assert progress.epoch == 1 and progress.best_val == 60.0
    trainer.train_and_evaluate(2, progress)
    second = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    assert all(torch.equal(progress.best[name], value) for name, value in second.items())
    trainer.train_and_evaluate(3, progress)
    assert progress.epoch == 3 and progress.best_val == 70.0
    assert all(torch.equal(progress.best[name], value) for name, value in second.items())
    assert any(not torch.equal(progress.best[name], value) for name, value in trainer.model.state_dict().items())
    assert trainer.best_method is None
    assert progress.test_per_class == [[0.6] * 10, [0.7] * 10, [0.7] * 10]
    assert [p["epoch"] for p in progress.curve] == [1, 2, 3]


def test_a_linear_run_keeps_the_method_state_of_its_best_epoch(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root, variant="role", freeze_backbone=True)
    trainer.evaluate = FixedEvaluation([(80.0, 10.0), (50.0, 10.0)])
    progress = Progress()
    trainer.train_and_evaluate(1, progress)
    kept = trainer.best_method["estimates"].clone()
    trainer.train_and_evaluate(2, progress)
    assert torch.equal(trainer.best_method["estimates"], kept)
    assert not torch.equal(trainer.method.state_dict()["estimates"], kept)


def test_a_finished_run_s_record_fields_are_read_off_its_progress(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root, epochs=3)
    curve = [{"epoch": 1, "val_map": 50.0, "val_map_observed": 40.0, "test_map": 45.0},
             {"epoch": 2, "val_map": 70.0, "val_map_observed": 30.0, "test_map": 55.0},
             {"epoch": 3, "val_map": 65.0, "val_map_observed": 35.0, "test_map": 60.0}]
    per_class = [[0.1 * epoch + 0.01 * c for c in range(10)] for epoch in (1, 2, 3)]
    best = {"weights": torch.ones(2)}
    progress = Progress(epoch=3, curve=curve, test_per_class=per_class, best_val=70.0, best=best)
    fields = trainer.results(progress, 12.5)
    assert trainer.best_model is best
    names = [str(c) for c in range(10)]
    selections = fields["selections"]
    assert selections["clean"] == {"epoch": 2, "val_map": 70.0, "test_map": 55.0,
                                   "per_class_ap": {n: 100 * ap for n, ap in zip(names, per_class[1], strict=True)}}
    assert selections["observed"] == {"epoch": 1, "val_map": 40.0, "test_map": 45.0,
                                      "per_class_ap": {n: 100 * ap for n, ap in zip(names, per_class[0], strict=True)}}
    assert selections["last"]["epoch"] == 3 and selections["last"]["val_map"] == 65.0
    assert fields["per_class_ap"] == selections["clean"]["per_class_ap"]
    assert (fields["val_map"], fields["test_map"], fields["best_epoch"]) == (70.0, 55.0, 2)
    assert fields["curve"] is curve and fields["train_seconds"] == 12.5
    assert fields["label_checksum"] == trainer.data.label_checksum
    assert fields["image_shape"] == [1, 56, 56]
    assert fields["determinism"] == determinism_note("cpu")
    assert fields["peak_memory_mb"] > 0
    assert not {"features", "linear_stage", "class_groups"} & set(fields)
    stage = {"epochs": 1}
    trainer.data = dataclasses.replace(trainer.data, class_groups=[0] * 5 + [1] * 5)
    with_stage = trainer.results(dataclasses.replace(progress, linear_stage=stage), 1.0)
    assert with_stage["linear_stage"] is stage
    assert with_stage["class_groups"] == {n: (0 if int(n) < 5 else 1) for n in names}


def test_a_linear_run_s_record_names_its_features(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root, freeze_backbone=True, epochs=1)
    fields = trainer.run()
    assert fields["features"] == trainer.features.checksum and len(fields["features"]) > 0
    assert fields["image_shape"] == [1, 56, 56]


def test_every_epoch_is_reported_to_the_callback_which_may_stop_the_run(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root, epochs=3)
    reported = []
    fields = trainer.run(on_epoch=lambda epoch, point: reported.append((epoch, point)))
    assert [epoch for epoch, _ in reported] == [1, 2, 3]
    assert [point for _, point in reported] == fields["curve"]
    assert fields["train_seconds"] > 0

    class Stop(Exception):
        pass

    def stop_at_two(epoch, point):
        if epoch == 2:
            raise Stop

    stopped = trainer_for(mini_mosaic, cache_root, epochs=3)
    with pytest.raises(Stop):
        stopped.run(on_epoch=stop_at_two)


def test_running_out_of_gpu_memory_asks_for_a_smaller_batch_in_one_line(mini_mosaic, cache_root, monkeypatch):
    trainer = trainer_for(mini_mosaic, cache_root, batch_size=33)

    def out_of_memory(epoch, progress):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(trainer, "train_and_evaluate", out_of_memory)
    with pytest.raises(UserError) as raised:
        trainer.run()
    assert str(raised.value) == ("out of GPU memory with batch_size=33 on cpu: run again with a smaller one (e.g. "
                                 "--set batch_size=16); the batch size is never changed behind your back")
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    one = trainer_for(mini_mosaic, cache_root, batch_size=1)
    monkeypatch.setattr(one, "train_and_evaluate", out_of_memory)
    with pytest.raises(UserError, match=r"--set batch_size=1\)"):
        one.run()


def test_a_resumed_run_keeps_the_seconds_already_spent(mini_mosaic, cache_root, tmp_path):
    partial = tmp_path / "run.partial.pt"
    first = trainer_for(mini_mosaic, cache_root, epochs=2)
    point = {"epoch": 1, "train_loss": 0.0, "val_map": 1.0, "val_map_observed": 1.0, "test_map": 0.0,
             "fn_memorised": 0.0}
    first.save_progress(partial, Progress(epoch=1, curve=[point], test_per_class=[[0.0] * 10], seconds=1000.0))
    reported = []
    fields = trainer_for(mini_mosaic, cache_root, epochs=2).run(
        resume_path=partial, on_epoch=lambda epoch, point: reported.append(epoch))
    assert reported == [2]
    assert 1000.0 < fields["train_seconds"] < 1100.0
    assert len(fields["curve"]) == 2


def test_mean_ap_is_in_percent_and_the_peak_memory_is_the_resident_peak():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.6]])
    targets = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])

    class Set:
        pass

    evaluation = Set()
    evaluation.targets, evaluation.known = targets, None
    assert mean_ap(scores, evaluation) == pytest.approx(100.0)
    assert peak_memory_mb(torch.device("cpu")) == resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_linear_init_starts_from_the_head_and_method_state_of_the_linear_stage_s_best_epoch(mini_mosaic, cache_root):
    spec = make_spec(mini_mosaic, "role+li", 0, overrides={"epochs": 1, "li_epochs": 3, "li_lr": 0.01})
    trainer = Trainer(spec, cache_root, progress=False)
    backbone = {name: value.clone() for name, value in trainer.model.backbone.state_dict().items()}
    stage = trainer.run_linear_stage()
    alone = Trainer(dataclasses.replace(spec, freeze_backbone=True, linear_init=False, epochs=3, lr=0.01,
                                        li_epochs=None, li_lr=None), cache_root, progress=False)
    result = alone.run()
    assert stage == {"epochs": 3, "lr": 0.01, "best_epoch": result["best_epoch"], "val_map": result["val_map"],
                     "test_map": result["test_map"], "curve": result["curve"], "train_seconds": stage["train_seconds"],
                     "features": result["features"]}
    assert 0 < stage["train_seconds"]
    for name, value in trainer.model.cam_head.state_dict().items():
        assert torch.equal(value, alone.best_model[f"cam_head.{name}"]), name
    assert torch.equal(trainer.method.estimates.detach(), alone.best_method["estimates"])
    assert all(torch.equal(value, backbone[name]) for name, value in trainer.model.backbone.state_dict().items())


def test_a_linear_init_run_trains_its_linear_stage_once(mini_mosaic, cache_root, tmp_path, monkeypatch):
    spec = make_spec(mini_mosaic, "an+li", 0, overrides={"epochs": 1, "li_epochs": 1})
    stages = []
    real_stage = Trainer.run_linear_stage

    def counted(self):
        stages.append(self.spec.variant)
        return real_stage(self)

    monkeypatch.setattr(Trainer, "run_linear_stage", counted)
    fields = Trainer(spec, cache_root, progress=False).run()
    assert stages == ["an+li"] and len(fields["linear_stage"]["curve"]) == 1
    partial = tmp_path / "run.partial.pt"
    trainer = Trainer(spec, cache_root, progress=False)
    trainer.save_progress(partial, Progress(linear_stage={"epochs": 1, "kept": True}))
    resumed = Trainer(spec, cache_root, progress=False).run(resume_path=partial)
    assert stages == ["an+li"] and resumed["linear_stage"] == {"epochs": 1, "kept": True}
    assert "linear_stage" not in trainer_for(mini_mosaic, cache_root, epochs=1).run()


def test_a_restored_checkpoint_brings_back_the_method_s_state(mini_mosaic, cache_root, tmp_path):
    trainer = trainer_for(mini_mosaic, cache_root, variant="role", epochs=1)
    trainer.run()
    partial = tmp_path / "run.partial.pt"
    trainer.save_progress(partial, Progress(epoch=1))
    fresh = trainer_for(mini_mosaic, cache_root, variant="role", epochs=1)
    assert not torch.equal(fresh.method.estimates.detach(), trainer.method.estimates.detach())
    assert fresh.restore(partial).epoch == 1
    assert torch.equal(fresh.method.estimates.detach(), trainer.method.estimates.detach())


def test_the_peak_memory_on_a_gpu_is_the_allocator_s_peak_in_mib(monkeypatch):
    gpu = torch.device("cuda", 0)
    asked = []

    def allocated(device):
        asked.append(device)
        return 3 * 2**20

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", allocated)
    assert peak_memory_mb(gpu) == 3.0 and asked == [gpu]


def test_evaluation_leaves_out_the_entries_a_dataset_marks_unannotated(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root)
    test = trainer.data.test
    known = np.ones_like(test.targets, dtype=bool)
    known[: len(known) // 2, :5] = False                               # half the images unannotated in 5 classes
    trainer.data = dataclasses.replace(trainer.data, test=Evaluation(test.images, test.targets, known),
                                       val_clean=Evaluation(trainer.data.val_clean.images,
                                                            trainer.data.val_clean.targets, known))
    clean, _, per_class = trainer.evaluate()
    test_scores = trainer.predict(trainer.test_inputs).numpy()
    assert np.array_equal(per_class, average_precision(test_scores, test.targets, known))
    assert not np.array_equal(per_class, average_precision(test_scores, test.targets, None))
    val_scores = trainer.predict(trainer.val_inputs).numpy()
    assert clean == 100 * float(average_precision(val_scores, trainer.data.val_clean.targets, known).mean())
    assert clean != 100 * float(average_precision(val_scores, trainer.data.val_clean.targets, None).mean())


def test_the_epoch_checkpoint_keeps_the_seconds_spent_so_far(mini_mosaic, cache_root, tmp_path):
    partial = tmp_path / "run.partial.pt"
    fields = trainer_for(mini_mosaic, cache_root, epochs=2).run(resume_path=partial)
    saved = torch.load(partial, weights_only=True)["seconds"]
    assert 0 < saved <= fields["train_seconds"]


def test_a_cosine_schedule_sets_each_epoch_s_rate_before_it_trains(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root, lr=0.002, lr_schedule="cosine", epochs=2)
    rates = []
    trainer.run(on_epoch=lambda epoch, point: rates.append(trainer.optimizer.param_groups[0]["lr"]))
    assert rates == [0.002, pytest.approx(0.001)]


class LiveState(Method):
    """A plugin whose state_dict hands out its live tensor, which every step changes in place."""

    name = ""

    def __init__(self):
        super().__init__()
        self.steps = torch.zeros(1)

    def batch_loss(self, logits, observed, *, epoch, indices=None):
        return logits.sum() * 0

    def after_step(self, logits, observed, indices, epoch, state):
        self.steps += 1

    def state_dict(self):
        return {"steps": self.steps}


def test_the_best_epoch_s_method_state_is_a_copy_even_of_a_live_tensor(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root, freeze_backbone=True, batch_size=250)
    trainer.method = LiveState()
    trainer.evaluate = FixedEvaluation([(80.0, 10.0), (50.0, 10.0)])
    progress = Progress()
    trainer.train_and_evaluate(1, progress)
    trainer.train_and_evaluate(2, progress)
    assert float(trainer.method.steps) == 4 and float(trainer.best_method["steps"]) == 2


class NearZero(torch.nn.Module):
    """A hand-made model: logit +0.5 for classes 0-4 and -0.5 for classes 5-9, whatever the image."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, images):
        return self.scale * torch.tensor([0.5] * 5 + [-0.5] * 5).expand(len(images), -1)


def test_a_false_negative_is_memorised_when_its_logit_is_below_zero(mini_mosaic, cache_root):
    trainer = trainer_for(mini_mosaic, cache_root, epochs=1, lr=1e-12)
    trainer.model = NearZero()
    _, share = trainer.train_epoch(1)
    false_negatives = trainer.data.false_negatives
    assert share == pytest.approx(float(false_negatives[:, 5:].sum()) / float(false_negatives.sum()), abs=1e-6)


def test_with_every_label_observed_no_false_negative_is_memorised(mini_mosaic, cache_root):
    spec = make_spec(mini_mosaic, "an", 0, overrides={"epochs": 1}, protocol="partial-1.0")
    trainer = Trainer(spec, cache_root, progress=False)
    assert int(trainer.data.false_negatives.sum()) == 0
    assert trainer.train_epoch(1)[1] == 0.0
