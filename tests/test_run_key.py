"""The run key is complete: every field of a RunSpec (but its data location) and every part of its identity changes
it, and every module the trainer depends on is hashed into the code version unless a reviewed list says why not.
A key that forgot a field would silently reuse the record of a different run."""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import re
import typing
from pathlib import Path

import pytest
import torch
from fixtures import voc_tree
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import registry
from bench.cli.main import main
from bench.errors import UserError
from bench.execute.identity import file_sha256, run_identity, run_key
from bench.execute.ledger import NO_CARRY, Ledger, LedgerEntry
from bench.execute.runner import base_record
from bench.spec import RunSpec, make_spec
from bench.versions import BENCH_DIR, CORE_HELPERS, code_version, harness_version

LOCATION_FIELDS = {"data_dir"}
"""RunSpec fields that say where the data is, not what it is (its content is the data fingerprint)."""

TRAINER_DEPENDENCIES_NOT_HASHED = {"__init__.py", "checkpoints.py", "errors.py", "numerics.py", "records.py",
                                   "registry.py", "versions.py"}
"""Modules the trainer imports, directly or not, that are reviewed as unable to change a run's numbers (each has its
reason in `bench.versions.CORE_HELPERS`)."""

BASE = make_spec("digits-mosaic", "an", 0)
IDENTITY = {"code_version": "0123456789ab", "data_fingerprint": "fedcba987654", "torch": "2.14.1",
            "numerics": {"device": "cpu", "isa": "AVX2", "threads": 1}}
HINTS = typing.get_type_hints(RunSpec)

SCALARS = st.one_of(st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=8))
VALUES = {
    int: st.integers(-2**40, 2**40),
    float: st.floats(allow_nan=False, allow_infinity=False),
    str: st.text(max_size=12),
    bool: st.booleans(),
    float | None: st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    int | None: st.one_of(st.none(), st.integers(-2**40, 2**40)),
    str | None: st.one_of(st.none(), st.text(max_size=12)),
    tuple[tuple[str, typing.Any], ...]: st.dictionaries(st.text(min_size=1, max_size=8), SCALARS, max_size=4).map(
        lambda d: tuple(sorted(d.items()))),
}


def test_every_field_type_has_a_strategy():
    """A field added to RunSpec with a new type must be covered here too."""
    assert set(HINTS.values()) <= set(VALUES), set(HINTS.values()) - set(VALUES)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_field_change_changes_the_key(data):
    name = data.draw(st.sampled_from(sorted(set(HINTS) - LOCATION_FIELDS)))
    value = data.draw(VALUES[HINTS[name]].filter(lambda v: v != getattr(BASE, name)
                                                 or type(v) is not type(getattr(BASE, name))))
    changed = dataclasses.replace(BASE, **{name: value})  # 1 for 1.0 or True too: JSON spells each differently
    assert changed.key(IDENTITY) != BASE.key(IDENTITY), (name, value)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_identity_change_changes_the_key(data):
    part = data.draw(st.sampled_from(sorted(IDENTITY)))
    if part == "numerics":
        field = data.draw(st.sampled_from(sorted(IDENTITY["numerics"])))
        new = data.draw(st.one_of(st.text(max_size=8), st.integers(0, 64)).filter(
            lambda v: v != IDENTITY["numerics"][field]))
        value = {**IDENTITY["numerics"], field: new}
    else:
        value = data.draw(st.text(max_size=16).filter(lambda v: v != IDENTITY[part]))
    assert BASE.key({**IDENTITY, part: value}) != BASE.key(IDENTITY), (part, value)


def test_the_data_location_is_not_in_the_key():
    assert dataclasses.replace(BASE, data_dir="/elsewhere").key(IDENTITY) == BASE.key(IDENTITY)


def test_the_key_is_16_hex_digits_whatever_the_order_of_the_identity():
    reordered = {part: IDENTITY[part] for part in reversed(IDENTITY)}
    reordered["numerics"] = dict(reversed(IDENTITY["numerics"].items()))
    assert BASE.key(reordered) == BASE.key(IDENTITY)
    assert re.fullmatch("[0-9a-f]{16}", BASE.key(IDENTITY))


def test_a_spec_comes_back_from_its_record_form():
    spec = dataclasses.replace(BASE, hparams=(("alpha", 0.5), ("beta", 2)))
    fields = json.loads(json.dumps(spec.to_dict()))  # as a record stores it
    assert fields["hparams"] == {"alpha": 0.5, "beta": 2}
    assert RunSpec.from_dict(fields) == spec
    assert RunSpec.from_dict({k: v for k, v in BASE.to_dict().items() if k != "hparams"}) == BASE  # none: empty


def test_the_real_identity_has_every_part(cache_root):
    identity = BASE.identity(cache_root)
    assert set(identity) == set(IDENTITY)
    assert identity["numerics"]["device"] == "cpu" and identity["numerics"]["threads"] >= 1
    assert re.fullmatch("[0-9a-f]{12}", identity["code_version"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", identity["torch"]) and torch.__version__.startswith(identity["torch"])


def test_the_code_version_hashes_both_plugin_files(mini_mosaic, cache_root):
    code = BASE.identity(cache_root)["code_version"]
    assert code == code_version(registry.method_class("an"), registry.dataset_class("digits-mosaic"))
    assert make_spec("digits-mosaic", "role", 0).identity(cache_root)["code_version"] != code  # methods/role.py
    assert make_spec(mini_mosaic, "an", 0).identity(cache_root)["code_version"] != code  # the test plugin's file


def test_the_numerics_are_those_of_the_spec_s_device(monkeypatch, cache_root):
    import bench.spec

    monkeypatch.setattr(bench.spec, "numerics", lambda device: {"device": device})
    assert dataclasses.replace(BASE, device="cuda").identity(cache_root)["numerics"] == {"device": "cuda"}


def test_a_weights_file_enters_the_key_by_its_content(tmp_path, cache_root):
    weights = tmp_path / "backbone.pth"
    weights.write_bytes(b"first weights")
    spec = dataclasses.replace(BASE, weights=str(weights))
    first = run_identity(spec, cache_root, NO_CARRY)
    assert first == {**spec.identity(cache_root), "weights_sha256": hashlib.sha256(b"first weights").hexdigest()}
    assert run_identity(spec, cache_root, NO_CARRY) == first                        # the same file: the same identity
    assert base_record(spec, "key", first, {"kind": "defaults"})["weights_sha256"] == first["weights_sha256"]
    weights.write_bytes(b"other weights, longer")                         # replaced at the same path
    assert spec.key(run_identity(spec, cache_root, NO_CARRY)) != spec.key(first)
    for built_in in (None, "none", "imagenet"):                           # no file: the spec's own identity
        named = dataclasses.replace(BASE, weights=built_in)
        assert run_identity(named, cache_root, NO_CARRY) == named.identity(cache_root)
    weights.unlink()
    with pytest.raises(UserError, match=f"weights file {weights} does not exist"):
        run_identity(spec, cache_root, NO_CARRY)


def test_the_ledger_keys_a_carried_code_version_as_the_stored_one(cache_root):
    identity = BASE.identity(cache_root)
    today, numerics = identity["code_version"], identity["numerics"]
    entry = LedgerEntry.model_validate({"format": 1, "date": "2026-12-04", "git_commit": "unknown",
                                        "versions": {today: "aaaaaaaaaaaa"}, "numerics": [numerics],
                                        "sampled": ["0123456789abcdef"], "records": 1, "all": False})
    carried = run_identity(BASE, cache_root, Ledger((entry,)))
    assert carried == {**identity, "code_version": "aaaaaaaaaaaa"}
    assert run_key(BASE, cache_root, Ledger((entry,))) == BASE.key(carried) != run_key(BASE, cache_root, NO_CARRY)
    elsewhere = entry.model_copy(update={"numerics": [{**numerics, "threads": numerics["threads"] + 1}]})
    assert run_identity(BASE, cache_root, Ledger((elsewhere,))) == identity  # proven on other numerics only


def test_a_weights_file_changed_in_place_is_hashed_again_even_at_the_same_size_or_time(tmp_path):
    """The checksum is remembered per path, size and modification time: a change of either is a new file."""
    weights = tmp_path / "backbone.pth"
    weights.write_bytes(b"a" * 10)
    first, status = file_sha256(weights), weights.stat()
    assert first == hashlib.sha256(b"a" * 10).hexdigest()
    weights.write_bytes(b"b" * 10)                                        # the same size, a later time
    os.utime(weights, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
    assert file_sha256(weights) == hashlib.sha256(b"b" * 10).hexdigest()
    weights.write_bytes(b"c" * 11)                                        # another size, the same time
    os.utime(weights, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))
    assert file_sha256(weights) == hashlib.sha256(b"c" * 11).hexdigest()


def test_every_key_is_computed_from_the_run_identity():
    """A module that keyed a run by `RunSpec.identity` alone would miss the weights file's checksum."""
    callers = [path.relative_to(BENCH_DIR).as_posix() for path in BENCH_DIR.rglob("*.py")
               if ".identity(" in path.read_text()]
    assert callers == ["execute/identity.py"]


def test_the_data_fingerprint_is_that_of_the_spec_s_folder(tmp_path, cache_root):
    voc_tree(tmp_path / "raw", train=8, val=4)
    assert main(["data", "prepare", "voc", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "voc")]) == 0
    spec = make_spec("voc", "an", 0, data_dir=str(tmp_path / "voc"), weights="none")
    fingerprint = registry.dataset_class("voc")().fingerprint(tmp_path / "voc", cache_root)
    assert spec.identity(cache_root)["data_fingerprint"] == fingerprint


def bench_imports(module: str) -> set[str]:
    """The bench modules (file names) that `module` imports, at its top or inside functions (TYPE_CHECKING too)."""
    found = set()
    for node in ast.walk(ast.parse((BENCH_DIR / module).read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "bench":
            found.add("__init__.py")
            found |= {f"{alias.name}.py" for alias in node.names if (BENCH_DIR / f"{alias.name}.py").exists()}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bench."):
            found.add(node.module.split(".")[1] + ".py")
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] + ".py" for alias in node.names if alias.name.startswith("bench.")}
    return found


def trainer_dependencies() -> set[str]:
    seen, todo = set(), ["trainer.py"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += sorted(bench_imports(module))
    return seen


def test_every_module_the_trainer_depends_on_is_hashed_unless_reviewed():
    dependencies = trainer_dependencies()
    assert {"trainer.py", "metrics.py", "model.py", "spec.py", "method.py", "rundata.py"} <= dependencies
    assert dependencies - {p.name for p in BENCH_DIR.glob('*.py')} == set()  # the trainer needs no layer above
    assert dependencies & set(CORE_HELPERS) == TRAINER_DEPENDENCIES_NOT_HASHED


def test_every_listed_module_exists_and_says_why():
    for name, reason in CORE_HELPERS.items():
        assert (BENCH_DIR / name).exists(), name
        assert len(reason) > 10, name


@pytest.fixture
def bench_copy(tmp_path, monkeypatch):
    """A copy of bench/ that `harness_version` hashes instead of the real one (its cache cleared around)."""
    import bench.versions as versions

    copy = tmp_path / "bench"
    copy.mkdir()
    for path in BENCH_DIR.glob("*.py"):
        (copy / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(versions, "BENCH_DIR", copy)
    harness_version.cache_clear()
    yield copy
    harness_version.cache_clear()


def version_after(edit) -> tuple[str, str]:
    """The harness version before and after `edit()`."""
    before = harness_version()
    harness_version.cache_clear()
    edit()
    return before, harness_version()


@pytest.mark.parametrize("module", ["trainer.py", "metrics.py", "model.py", "spec.py", "rundata.py"])
def test_a_change_of_a_hashed_module_changes_the_harness_version(module, bench_copy):
    def edit():
        with (bench_copy / module).open("a") as edited:
            edited.write("\n# a change\n")

    before, after = version_after(edit)
    assert after != before


def test_line_endings_do_not_change_the_harness_version(bench_copy):
    trainer = Path(bench_copy / "trainer.py")
    before, after = version_after(lambda: trainer.write_bytes(trainer.read_bytes().replace(b"\n", b"\r\n")))
    assert after == before

