"""pamlbench: a benchmark harness for partially annotated multi-label image classification.

Public API for plugins and users:
    Method, TrainState, Hyperparam         the method plugin contract (bench.method, bench.hparams)
    Dataset, Split, Splits                 the dataset plugin contract (bench.dataset)
    load_method(name, dataset=None, **hp)  a configured method object; `batch_loss(logits, observed, epoch=, indices=)`
    load_dataset(name)                     a dataset plugin object
    list_methods(pattern), list_datasets(pattern)
"""

__version__ = "0.1.0"

from bench.dataset import Dataset, Split, Splits
from bench.errors import UserError
from bench.hparams import Hyperparam
from bench.method import Method, TrainState
from bench.registry import load_dataset, load_method


def list_methods(pattern: str = "*") -> list[str]:
    """Names of the registered methods matching a shell-style pattern (e.g. 'll-*')."""
    from bench.registry import list_names

    return list_names("methods", pattern)


def list_datasets(pattern: str = "*") -> list[str]:
    """Names of the registered datasets matching a shell-style pattern."""
    from bench.registry import list_names

    return list_names("datasets", pattern)


__all__ = ["Dataset", "Hyperparam", "Method", "Split", "Splits", "TrainState", "UserError", "list_datasets",
           "list_methods", "load_dataset", "load_method"]
