import dataclasses
import textwrap

import pytest

from bench.errors import UserError
from bench.spec import make_spec, parse_variant
from bench.versions import code_version


@pytest.fixture
def spec():
    return make_spec("digits-mosaic", "an", 0)


def test_defaults_come_from_the_dataset(spec):
    assert (spec.lr, spec.batch_size, spec.epochs, spec.backbone) == (3e-3, 32, 5, "small-cnn")


def test_same_spec_same_key(spec, cache_root):
    assert spec.key(cache_root) == make_spec("digits-mosaic", "an", 0).key(cache_root)


@pytest.mark.parametrize("change", [
    {"seed": 1}, {"lr": 1e-4}, {"batch_size": 16}, {"epochs": 2}, {"head_lr_mult": 10.0}, {"boost_alpha": 3.0},
    {"boostlu_train": True}, {"boostlu_infer": True}, {"protocol": "partial-0.5"}, {"label_seed": 1},
    {"val_variant": "observed"}, {"method": "full"}, {"device": "cuda"}, {"backbone": "resnet50"},
])
def test_any_change_changes_the_key(spec, cache_root, change):
    assert dataclasses.replace(spec, **change).key(cache_root) != spec.key(cache_root)


def test_data_dir_is_a_location_not_part_of_the_key(spec, cache_root):
    assert dataclasses.replace(spec, data_dir="/elsewhere").key(cache_root) == spec.key(cache_root)


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
    ({"overrides": {"boost_alpha": "0.5"}}, "boost_alpha"),
    ({"overrides": {"unknown": "1"}}, "no hyperparameter"),
    ({"val_variant": "dirty"}, "validation variant"),
    ({"protocol": "two-positive"}, "protocol"),
])
def test_bad_values_are_user_errors(kwargs, message):
    args = {"dataset": "digits-mosaic", "variant": "an", "seed": 0} | kwargs
    with pytest.raises(UserError, match=message):
        make_spec(**args)
