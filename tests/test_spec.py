import dataclasses
import textwrap

import pytest

from bench.errors import UserError
from bench.spec import TRAINING_HPARAMS, check_seed, make_spec, parse_variant, variant_trainer_hparams
from bench.versions import code_version


@pytest.fixture
def spec():
    return make_spec("digits-mosaic", "an", 0)


def key(spec, cache_root):
    return spec.key(spec.identity(cache_root))


def test_defaults_come_from_the_dataset(spec):
    assert (spec.lr, spec.batch_size, spec.epochs, spec.backbone, spec.lr_schedule) == (
        3e-3, 32, 12, "small-cnn", "constant")
    assert make_spec("fashion-mosaic", "an", 0).epochs == 18


def test_same_spec_same_key(spec, cache_root):
    assert key(spec, cache_root) == key(make_spec("digits-mosaic", "an", 0), cache_root)


@pytest.mark.parametrize("change", [
    {"seed": 1}, {"lr": 1e-4}, {"batch_size": 16}, {"epochs": 2}, {"head_lr_mult": 10.0}, {"lr_schedule": "cosine"},
    {"boostlu_train": True, "boost_alpha": 5.0}, {"boostlu_infer": True, "boost_alpha": 5.0},
    {"protocol": "partial-0.5"}, {"label_seed": 1}, {"method": "full"}, {"device": "cuda"}, {"backbone": "resnet50"},
])
def test_any_change_changes_the_key(spec, cache_root, change):
    identity = spec.identity(cache_root)
    assert dataclasses.replace(spec, **change).key(identity) != spec.key(identity)


def test_boost_alpha_is_in_the_key_of_boostlu_variants_only(cache_root):
    plain = make_spec("digits-mosaic", "an", 0, overrides={"boost_alpha": 3}, strict=False)
    assert plain.boost_alpha is None and key(plain, cache_root) == key(make_spec("digits-mosaic", "an", 0),
                                                                       cache_root)
    boosted = make_spec("digits-mosaic", "an+boostlu", 0)
    assert boosted.boost_alpha == 5.0
    assert key(make_spec("digits-mosaic", "an+boostlu", 0, overrides={"boost_alpha": 3}), cache_root) != key(
        boosted, cache_root)
    with pytest.raises(UserError, match="applies only to variants with BoostLU"):
        make_spec("digits-mosaic", "an", 0, overrides={"boost_alpha": 3})


def test_thread_count_is_in_the_key(spec, cache_root):
    """Thread count changes CPU numerics, so two thread counts never share a key (nor a leaderboard cell)."""
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = spec.identity(cache_root)
        torch.set_num_threads(2)
        two = spec.identity(cache_root)
    finally:
        torch.set_num_threads(before)
    assert one["numerics"]["threads"] == 1 and two["numerics"]["threads"] == 2
    assert spec.key(one) != spec.key(two)


def test_data_dir_is_a_location_not_part_of_the_key(spec, cache_root):
    identity = spec.identity(cache_root)
    assert dataclasses.replace(spec, data_dir="/elsewhere").key(identity) == spec.key(identity)


def test_code_change_changes_code_version(tmp_path):
    plugin = tmp_path / "plugin.py"
    plugin.write_text("class Plugin:\n    pass\n")
    namespace = {}
    exec(compile(plugin.read_text(), str(plugin), "exec"), namespace)
    cls = namespace["Plugin"]
    cls.__module__ = "probe"
    import sys
    import types
    module = types.ModuleType("probe")
    module.__file__ = str(plugin)
    sys.modules["probe"] = module
    try:
        before = code_version(cls)
        plugin.write_text(textwrap.dedent("class Plugin:\n    x = 1\n"))
        assert code_version(cls) != before
    finally:
        del sys.modules["probe"]


def test_variant_names():
    assert parse_variant("ll-r+boostlu") == ("ll-r", True, True)
    assert parse_variant("an+boostlu-infer") == ("an", False, True)
    assert parse_variant("an+boostlu-train") == ("an", True, False)
    assert make_spec("digits-mosaic", "an+boostlu", 0).variant == "an+boostlu"


@pytest.mark.parametrize("kwargs, message", [
    ({"variant": "nope"}, "unknown method"),
    ({"dataset": "nope"}, "unknown dataset"),
    ({"overrides": {"lr": "-1"}}, "lr"),
    ({"overrides": {"lr": "fast"}}, "must be a number"),
    ({"overrides": {"epochs": "2.5"}}, "must be an integer"),
    ({"variant": "an+boostlu", "overrides": {"boost_alpha": "0.5"}}, "boost_alpha"),
    ({"overrides": {"unknown": "1"}}, "no hyperparameter"),
    ({"overrides": {"lr_schedule": "linear"}}, "is not one of constant, cosine"),
    ({"protocol": "two-positive"}, "protocol"),
    ({"seed": -1}, r"seed -1 must be an integer in \[0, 4294967296\)"),
    ({"seed": 2**32}, "must be an integer in"),
    ({"label_seed": -3}, "label seed -3"),
    ({"data_dir": "/tmp"}, "takes no --data folder"),
])
def test_bad_values_are_user_errors(kwargs, message):
    args = {"dataset": "digits-mosaic", "variant": "an", "seed": 0} | kwargs
    with pytest.raises(UserError, match=message):
        make_spec(**args)


@pytest.mark.parametrize(("variant", "boost", "linear_init"), [
    ("an", False, False), ("an+boostlu", True, False), ("an+boostlu-train", True, False),
    ("an+boostlu-infer", True, False), ("role+li", False, True), ("ls+li", False, True)])
def test_a_variant_has_the_boostlu_and_linearinit_settings_only_when_it_has_them(variant, boost, linear_init):
    names = set(variant_trainer_hparams(variant))
    assert ("boost_alpha" in names) is boost
    assert {"li_epochs", "li_lr"} <= names if linear_init else not names & {"li_epochs", "li_lr"}
    assert {"lr", "batch_size", "epochs"} <= names


def test_make_spec_keeps_every_setting_it_is_given():
    spec = make_spec("voc", "an", 3, protocol="partial-0.5", label_seed=7, device="cuda", weights="none",
                     recipe="tuned", data_dir="/data/here")
    assert (spec.protocol, spec.label_seed, spec.device, spec.weights, spec.recipe, spec.data_dir, spec.seed) == (
        "partial-0.5", 7, "cuda", "none", "tuned", "/data/here", 3)


@pytest.mark.parametrize("value", [True, 1.0, "1", -1, 2**32])
def test_a_seed_must_be_an_integer_in_numpy_s_range(value):
    with pytest.raises(UserError, match=r"^seed .* must be an integer in \[0, 4294967296\)$"):
        check_seed("seed", value)


def test_the_seed_range_ends_at_numpy_s_limit():
    assert check_seed("seed", 0) == 0 and check_seed("seed", 2**32 - 1) == 2**32 - 1


def test_an_unknown_hyperparameter_lists_the_method_s_and_the_trainer_s():
    trainer = ", ".join(TRAINING_HPARAMS)
    with pytest.raises(UserError) as raised:
        make_spec("digits-mosaic", "an", 0, overrides={"bogus": 1})
    assert str(raised.value) == (f"method 'an' has no hyperparameter 'bogus' (it has: none; and the trainer's: "
                                 f"{trainer})")
    with pytest.raises(UserError) as raised:
        make_spec("digits-mosaic", "ll-r", 0, overrides={"bogus": 1})
    assert str(raised.value) == ("method 'll-r' has no hyperparameter 'bogus' (it has: delta_rel, exact_schedule; and "
                                 f"the trainer's: {trainer})")


def test_a_dataset_that_needs_a_folder_says_how_to_get_one():
    with pytest.raises(UserError) as raised:
        make_spec("voc", "an", 0)
    assert str(raised.value) == "dataset 'voc' needs --data DIR (the folder `pamlbench data prepare` wrote)"


@pytest.mark.parametrize("variant", ["role+li+boostlu", "role+li+boostlu-train", "role+li+boostlu-infer"])
def test_linear_init_takes_no_half_of_boostlu_either(variant):
    with pytest.raises(UserError, match="LinearInit and BoostLU are not combined"):
        make_spec("digits-mosaic", variant, 0)
    assert parse_variant(variant)[0] == "role"


@pytest.mark.parametrize("variant", ["an+boostlu-train", "an+boostlu-infer"])
def test_boost_alpha_belongs_to_either_half_of_boostlu(variant):
    assert make_spec("digits-mosaic", variant, 0, overrides={"boost_alpha": 3.0}).boost_alpha == 3.0


def test_a_dataset_s_default_weights_go_with_its_default_backbone_only():
    assert make_spec("voc", "an", 0, data_dir="/data").weights == "imagenet"
    assert make_spec("voc", "an", 0, data_dir="/data", overrides={"backbone": "small-cnn"}).weights is None


def test_a_spec_s_recipe_is_defaults_unless_named():
    assert make_spec("digits-mosaic", "an", 0).recipe == "defaults"
