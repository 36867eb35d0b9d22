"""Discovery of method and dataset plugins.

Plugins are Python files in plugin folders, not import packages: the project's own `methods/` and `datasets/`
folders, any folders listed in the environment variable PAMLBENCH_PLUGIN_PATH (os.pathsep-separated; each may
contain `methods/` and `datasets/` subfolders), and modules named by the entry-point group `pamlbench.plugins`.
Each file is imported under a private module name; every `Method` / `Dataset` subclass with a `name` that it
defines is registered. Two plugins with the same name are an error, never a silent override.
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
import os
import sys
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from bench.dataset import Dataset
from bench.errors import UserError
from bench.method import Method

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def plugin_roots() -> list[Path]:
    """Folders that may hold `methods/` and `datasets/` plugin folders, in search order."""
    roots = [PROJECT_ROOT]
    for entry in os.environ.get("PAMLBENCH_PLUGIN_PATH", "").split(os.pathsep):
        if entry:
            roots.append(Path(entry).resolve())
    return roots


def _import_file(path: Path) -> object:
    module_name = f"pamlbench_plugins.{path.parent.name}.{path.stem}"
    if module_name in sys.modules and getattr(sys.modules[module_name], "__file__", None) == str(path):
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - any failure of a plugin file is the plugin's
        del sys.modules[module_name]
        where = f" (line {error.lineno})" if isinstance(error, SyntaxError) and error.lineno else ""
        raise UserError(f"plugin file {path} cannot be loaded{where}: {type(error).__name__}: "
                        f"{str(error).splitlines()[0] if str(error) else ''}; fix it or remove it from "
                        "PAMLBENCH_PLUGIN_PATH") from None
    return module


def _plugin_modules(kind: str) -> list[object]:
    modules = []
    for root in plugin_roots():
        folder = root / kind
        if folder.is_dir():
            modules += [_import_file(p) for p in sorted(folder.glob("*.py")) if not p.name.startswith("_")]
    for entry in entry_points(group="pamlbench.plugins"):
        try:
            modules.append(importlib.import_module(entry.value))
        except Exception as error:  # noqa: BLE001 - an installed plugin package that fails to import
            raise UserError(f"plugin package {entry.value} (entry point {entry.name!r}) cannot be imported: "
                            f"{type(error).__name__}: {error}") from None
    return modules


def _collect(kind: str, base: type) -> dict[str, type]:
    found: dict[str, type] = {}
    for module in _plugin_modules(kind):
        for obj in vars(module).values():
            if isinstance(obj, type) and issubclass(obj, base) and obj.__module__ == module.__name__ and obj.name:
                if obj.name in found and found[obj.name] is not obj:
                    raise UserError(f"two {kind} plugins are named {obj.name!r}: "
                                    f"{found[obj.name].__module__} and {obj.__module__}")
                check_declaration(obj, getattr(module, "__file__", module.__name__))
                found[obj.name] = obj
    return dict(sorted(found.items()))


def check_declaration(plugin: type, where: str) -> None:
    """UserError naming the plugin's file unless its declarations have the contract's types: a str `name` and
    `summary`, and for a method a dict `hparams` of Hyperparam by name."""
    from bench.hparams import Hyperparam

    for field in ("name", "summary"):
        if not isinstance(getattr(plugin, field, None), str):
            raise UserError(f"plugin {plugin.__name__} in {where}: `{field}` must be a string")
    hparams = getattr(plugin, "hparams", {})
    if issubclass(plugin, Method) and not (isinstance(hparams, dict) and all(
            isinstance(k, str) and isinstance(v, Hyperparam) for k, v in hparams.items())):
        raise UserError(f"plugin {plugin.__name__} in {where}: `hparams` must be a dict of Hyperparam by name, not "
                        f"{type(hparams).__name__}")


@cache
def methods() -> dict[str, type[Method]]:
    """Every registered method class by name."""
    return _collect("methods", Method)


@cache
def datasets() -> dict[str, type[Dataset]]:
    """Every registered dataset class by name."""
    return _collect("datasets", Dataset)


def list_names(kind: str, pattern: str = "*") -> list[str]:
    """Registered names of `kind` ('methods' or 'datasets') matching a shell-style pattern."""
    table = methods() if kind == "methods" else datasets()
    return [name for name in table if fnmatch.fnmatch(name, pattern)]


def method_class(name: str) -> type[Method]:
    """The method class called `name`; UserError listing the known names otherwise."""
    table = methods()
    if name not in table:
        raise UserError(f"unknown method {name!r}; known methods: {', '.join(table)}")
    return table[name]


def dataset_class(name: str) -> type[Dataset]:
    """The dataset class called `name`; UserError listing the known names otherwise."""
    table = datasets()
    if name not in table:
        raise UserError(f"unknown dataset {name!r}; known datasets: {', '.join(table)}")
    return table[name]


def load_method(name: str, dataset: str | None = None, **hparams: object) -> Method:
    """Instantiate method `name` with defaults for `dataset`, overridden and validated by `hparams`."""
    return method_class(name)(dataset=dataset, **hparams)


def load_dataset(name: str) -> Dataset:
    """Instantiate dataset plugin `name`."""
    return dataset_class(name)()
