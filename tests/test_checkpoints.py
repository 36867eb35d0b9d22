"""Checkpoint files: their names, an atomic round trip of tensors and plain values, and one clear line for a file
that is missing, unreadable or holds more than tensors and plain values."""

import pickle

import pytest
import torch

from bench import checkpoints
from bench.errors import UserError


def test_a_runs_two_files_are_named_by_its_key(tmp_path):
    assert checkpoints.resume_file(tmp_path, "abc123") == tmp_path / "abc123.partial.pt"
    assert checkpoints.best_file(tmp_path, "abc123") == tmp_path / "abc123.pt"


def test_save_then_load_gives_back_tensors_and_plain_values_on_the_cpu(tmp_path):
    state = {"model": {"weight": torch.arange(6, dtype=torch.float32).view(2, 3)}, "epoch": 3, "curve": [0.5, 0.25],
             "rng": torch.Generator().manual_seed(7).get_state(), "name": "ll-cp"}
    path = tmp_path / "nested" / "run.partial.pt"
    checkpoints.save(state, path)
    loaded = checkpoints.load(path)
    assert loaded.keys() == state.keys() and loaded["epoch"] == 3 and loaded["curve"] == [0.5, 0.25]
    assert loaded["name"] == "ll-cp" and torch.equal(loaded["rng"], state["rng"])
    assert torch.equal(loaded["model"]["weight"], state["model"]["weight"])
    assert loaded["model"]["weight"].device.type == "cpu"
    assert [p.name for p in path.parent.iterdir()] == ["run.partial.pt"]  # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o644


def test_saving_again_replaces_the_checkpoint(tmp_path):
    path = tmp_path / "run.partial.pt"
    checkpoints.save({"epoch": 1}, path)
    checkpoints.save({"epoch": 2}, path)
    assert checkpoints.load(path) == {"epoch": 2}


class Arbitrary:
    """An object a weights-only load must refuse to rebuild."""


@pytest.mark.parametrize(("content", "cause"), [(b"not a checkpoint", "UnpicklingError"), (b"", "EOFError"),
                                               (pickle.dumps({"object": Arbitrary()}, protocol=2), "UnpicklingError")],
                         ids=["garbage", "empty", "arbitrary pickled object"])
def test_an_unreadable_checkpoint_is_one_line_that_names_it_and_the_cause(tmp_path, content, cause):
    path = tmp_path / "run.partial.pt"
    path.write_bytes(content)
    with pytest.raises(UserError) as raised:
        checkpoints.load(path)
    assert str(raised.value) == f"cannot read checkpoint {path} ({cause}); delete it to start afresh"


def test_an_arbitrary_object_inside_a_torch_checkpoint_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    torch.save({"model": {}, "extra": Arbitrary()}, path)
    with pytest.raises(UserError, match="cannot read checkpoint"):
        checkpoints.load(path)


def test_the_best_weights_are_the_model_entry_and_a_missing_file_says_where_it_comes_from(tmp_path):
    path = checkpoints.best_file(tmp_path, "key")
    with pytest.raises(UserError) as raised:
        checkpoints.load_model_weights(path)
    assert str(raised.value) == f"checkpoint {path} is missing: it is written where its cell is trained"
    weights = {"head.weight": torch.ones(2, 2)}
    checkpoints.save({"model": weights, "method": {"estimates": torch.zeros(3)}}, path)
    loaded = checkpoints.load_model_weights(path)
    assert loaded.keys() == weights.keys() and torch.equal(loaded["head.weight"], weights["head.weight"])
