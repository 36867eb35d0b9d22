"""Hyperparameter values as `--set` and grid files give them: types, booleans, valid ranges at and around their
bounds, choices, per-dataset defaults and names that are not declared."""

import math
import re

import pytest

from bench.errors import UserError
from bench.hparams import Hyperparam, resolve

RATE = Hyperparam(0.1, low=0.0, high=1.0, low_open=True)              # (0, 1]
SHARE = Hyperparam(0.5, low=0.0, high=1.0, high_open=True)            # [0, 1)
COUNT = Hyperparam(5, low=1)                                          # [1, inf)
SHIFT = Hyperparam(0.0, high=0.0)                                     # (-inf, 0]
FLAG = Hyperparam(False)
MODE = Hyperparam("constant", choices=("constant", "cosine"))


@pytest.mark.parametrize("param, text", [(RATE, "(0, 1]"), (SHARE, "[0, 1)"), (COUNT, "[1, inf)"), (SHIFT, "(-inf, 0]"),
                                         (Hyperparam(2.5e-5, low=1e-6, high=0.5), "[1e-06, 0.5]")])
def test_the_valid_range_is_written_in_interval_notation(param, text):
    assert param.describe_range() == text


@pytest.mark.parametrize("param, value, expected", [
    (RATE, "1", 1.0), (RATE, 1e-9, 1e-9), (SHARE, 0, 0.0), (SHARE, "0.999", 0.999), (COUNT, "1", 1),
    (COUNT, "12.0", 12), (SHIFT, -3, -3.0), (SHIFT, "0", 0.0)])
def test_a_value_at_a_closed_bound_or_inside_is_taken_with_the_default_s_type(param, value, expected):
    taken = param.coerce("x", value)
    assert taken == expected and type(taken) is type(param.default)


@pytest.mark.parametrize("param, value, refused", [
    (RATE, 0, "x=0.0 is out of range: it must be in (0, 1]"),
    (RATE, "1.0001", "x=1.0001 is out of range: it must be in (0, 1]"),
    (SHARE, 1, "x=1.0 is out of range: it must be in [0, 1)"),
    (SHARE, -0.001, "x=-0.001 is out of range: it must be in [0, 1)"),
    (COUNT, 0, "x=0 is out of range: it must be in [1, inf)"),
    (SHIFT, "1e-9", "x=1e-09 is out of range: it must be in (-inf, 0]"),
])
def test_a_value_at_an_open_bound_or_outside_is_refused_with_the_range(param, value, refused):
    with pytest.raises(UserError, match=f"^hyperparameter {re.escape(refused)}$"):
        param.coerce("x", value)


@pytest.mark.parametrize("value, message", [
    ("nan", "x=nan must be a finite number"), (math.inf, "x=inf must be a finite number"),
    ("fast", "x='fast' must be a number"), (True, "x=True must be a number, not a boolean"),
    (None, "x=None must be a number")])
def test_a_number_that_is_not_one_is_refused(value, message):
    with pytest.raises(UserError, match=f"^hyperparameter {message}$"):
        RATE.coerce("x", value)


def test_an_integer_hyperparameter_refuses_a_fraction():
    with pytest.raises(UserError, match=r"^hyperparameter x='2.5' must be an integer$"):
        COUNT.coerce("x", "2.5")


@pytest.mark.parametrize("text", ["1", "true", "yes", "on", " TRUE ", "On", True])
def test_words_for_true(text):
    assert FLAG.coerce("x", text) is True


@pytest.mark.parametrize("text", ["0", "false", "no", "off", "False ", "NO", False])
def test_words_for_false(text):
    assert Hyperparam(True).coerce("x", text) is False


@pytest.mark.parametrize("text", ["2", "y", "", "truth"])
def test_any_other_word_is_not_a_boolean(text):
    with pytest.raises(UserError, match=f"^hyperparameter x={text!r} must be true or false$"):
        FLAG.coerce("x", text)


def test_a_string_hyperparameter_takes_only_its_choices():
    assert MODE.coerce("x", "cosine") == "cosine"
    with pytest.raises(UserError, match="^hyperparameter x='linear' is not one of constant, cosine$"):
        MODE.coerce("x", "linear")


def test_resolve_completes_with_the_dataset_s_defaults_and_refuses_undeclared_names():
    declared = {"alpha": Hyperparam(0.1, per_dataset={"voc": 0.2}, low=0.0), "steps": COUNT}
    assert resolve(declared, {}, "voc", "em") == {"alpha": 0.2, "steps": 5}
    assert resolve(declared, {}, "coco", "em") == {"alpha": 0.1, "steps": 5}
    assert resolve(declared, {"steps": "7"}, None, "em") == {"alpha": 0.1, "steps": 7}
    with pytest.raises(UserError, match=r"^em has no hyperparameter 'beta' \(it has: alpha, steps\)$"):
        resolve(declared, {"steps": 2, "beta": 1, "gamma": 2}, "voc", "em")
    with pytest.raises(UserError, match=r"^an has no hyperparameter 'beta' \(it has: none\)$"):
        resolve({}, {"beta": 1}, None, "an")
    with pytest.raises(UserError, match=r"^hyperparameter steps=0 is out of range: it must be in \[1, inf\)$"):
        resolve(declared, {"steps": 0}, "voc", "em")
