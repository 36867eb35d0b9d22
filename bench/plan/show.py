"""`bench --plan` and `tune --plan`: every cell (or study) a command would train, with its resolved settings and
where each value came from, training and writing nothing.

Origins, from the strongest: `--set` (the command line), `grid file` (its `[overrides]`), the cell's recipe (`tuned`:
the study's best values in results/tuned/; `paper <key>`: that paper's settings, or its grid study's best), `default`
(the dataset's default for the trainer's settings, the method's declared default, possibly per dataset, for its
own).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.spec import RunSpec, variant_trainer_hparams


def value_origins(spec: RunSpec, source: dict[str, Any], grid) -> dict[str, tuple[Any, str]]:
    """name -> (value, origin) of every trainer setting and method hyperparameter of `spec`, whose hyperparameter
    source (`bench.plan.grid.Grid.cells`) says which values its recipe set; `grid` (a `bench.plan.grid.Grid`) says
    where each of its overrides was set."""
    values = {name: getattr(spec, name) for name in variant_trainer_hparams(spec.variant)}
    values.update(spec.method_hparams())

    def origin(name: str) -> str:
        overridden = grid.origin_of(name)
        if overridden:
            return overridden
        if name in source.get("values", {}):
            return f"paper {source['paper']}" if source.get("kind") == "paper" else str(source.get("kind"))
        return "default"

    return {name: (value, origin(name)) for name, value in values.items()}


def plan_line(spec: RunSpec, origins: dict[str, tuple[Any, str]], status: str) -> str:
    """One cell: its name, what will happen to it, and every value with its origin."""
    settings = ", ".join(f"{name}={value} ({origin})" for name, (value, origin) in origins.items())
    data = (f", weights {spec.weights}" if spec.weights else "") + (f", data {spec.data_dir}" if spec.data_dir else "")
    return (f"{spec.dataset} {spec.variant} seed={spec.seed} recipe={spec.recipe} [{status}]: {settings}; label seed "
            f"{spec.label_seed}, "
            f"{spec.protocol}, device {spec.device}{data}")


def print_plan(cells: list[tuple[RunSpec, dict[str, Any]]], statuses: list[str], grid) -> None:
    """Print the plan of `cells` (each with its status, e.g. 'to train' or 'recorded') of `grid`."""
    for (spec, source), status in zip(cells, statuses, strict=True):
        print(plan_line(spec, value_origins(spec, source, grid), status)
              + (f" (extrapolated: {source['extrapolation']})" if source.get("extrapolation") else ""))
    counts = Counter(status.split(":")[0] for status in statuses)
    print(f"plan: {len(cells)} cell(s): " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
          + "; nothing was trained")


def space_text(space: dict[str, tuple[float, float] | list[Any]]) -> str:
    """What a study searches, e.g. 'lr in [0.0003, 0.03], batch_size in {8, 16}'."""
    return ", ".join(f"{name} in {{{', '.join(f'{v:g}' for v in bounds)}}}" if isinstance(bounds, list)
                     else f"{name} in [{bounds[0]:.3g}, {bounds[1]:.3g}]" for name, bounds in space.items())
