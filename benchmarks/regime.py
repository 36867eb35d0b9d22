"""The rule that chose the mosaics' default number of epochs (docs/regime.md), measured again.

For each mosaic, trains the full-label oracle and assume negative (AN) for --max-epochs epochs at the dataset's
default constant learning rate with the tuning seeds (100 and 101, outside the benchmark's), and prints, for every
candidate epoch count E, the oracle's validation-mAP gain over the last quarter of the epochs and AN's drop from its
peak at epoch E (means over the seeds), and the smallest E that satisfies both criteria (gain < 0.5, drop >= 5).
With a constant learning rate the first E epochs of a longer run are an E-epoch run, so one run per seed measures
every candidate. Only validation mAP is read; test mAP plays no part.

    python benchmarks/regime.py [--dataset fashion-mosaic] [--flips] [--lr 0.003] [--max-epochs 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench import registry
from bench.spec import make_spec
from bench.trainer import Trainer

TUNING_SEEDS = (100, 101)
CANDIDATES = (8, 10, 12, 14, 16, 18, 20)
MAX_GAIN, MIN_DROP = 0.5, 5.0


def curves(dataset: str, variant: str, epochs: int, lr: float | None, cache: Path) -> list[list[float]]:
    overrides = {"epochs": epochs, "lr_schedule": "constant", **({"lr": lr} if lr else {})}
    runs = []
    for seed in TUNING_SEEDS:
        result = Trainer(make_spec(dataset, variant, seed, overrides=overrides), cache, progress=False).run()
        runs.append([point["val_map"] for point in result["curve"]])
    return runs


def criteria(oracle: list[list[float]], an: list[list[float]], epochs: int) -> tuple[float, float]:
    """(oracle's gain over the last quarter, AN's drop from its peak) at `epochs`, means over the seeds."""
    quarter = round(epochs / 4)
    gain = sum(run[epochs - 1] - run[epochs - 1 - quarter] for run in oracle) / len(oracle)
    mean_an = [sum(run[e] for run in an) / len(an) for e in range(epochs)]
    return gain, max(mean_an) - mean_an[epochs - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", help="default: both mosaics")
    parser.add_argument("--flips", action="store_true", help="train with random horizontal flips")
    parser.add_argument("--lr", type=float, help="default: the dataset's")
    parser.add_argument("--max-epochs", type=int, default=max(CANDIDATES))
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="pamlbench-regime-"))
    for dataset in args.dataset or ["digits-mosaic", "fashion-mosaic"]:
        registry.dataset_class(dataset).train_flip = args.flips
        oracle = curves(dataset, "full", args.max_epochs, args.lr, cache)
        an = curves(dataset, "an", args.max_epochs, args.lr, cache)
        chosen = None
        print(f"{dataset} (flips {'on' if args.flips else 'off'}): E | oracle gain, last quarter | AN drop from peak")
        for epochs in (e for e in CANDIDATES if e <= args.max_epochs):
            gain, drop = criteria(oracle, an, epochs)
            ok = gain < MAX_GAIN and drop >= MIN_DROP
            chosen = chosen or (epochs if ok else None)
            print(f"  {epochs:3d} | {gain:+.2f} | {drop:.2f}{'  <- both criteria hold' if ok else ''}")
        print(f"  smallest E satisfying the rule: {chosen}")


if __name__ == "__main__":
    main()
