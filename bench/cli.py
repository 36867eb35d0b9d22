"""The `pamlbench` command line: list, data info, run, bench, report.

Every user error (unknown name, bad value, unreadable file) prints one line `pamlbench: error: ...` on stderr and
exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench import registry
from bench.errors import UserError

DEFAULT_RESULTS = Path("results")
DEFAULT_CACHE = Path(".pamlbench")
DEFAULT_LEADERBOARD = Path("leaderboard.md")
DEFAULT_GRID = Path("benchmark.toml")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message: str) -> None:
        raise UserError(f"{self.prog}: {message} (see --help)")


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """['lr=0.01', 'epochs=3'] -> {'lr': '0.01', 'epochs': '3'} (values are typed by the hyperparameter)."""
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UserError(f"--set expects NAME=VALUE, got {item!r}")
        values[name.strip()] = value.strip()
    return values


def workspace_from(args: argparse.Namespace):
    from bench.runner import Workspace

    return Workspace(results=Path(args.results), cache=Path(args.cache))


def cmd_list(args: argparse.Namespace) -> None:
    if args.kind == "methods":
        for name, cls in registry.methods().items():
            if name not in registry.list_names("methods", args.pattern):
                continue
            print(f"{name:10s} {cls.summary}")
            for hp_name, hp in cls.hparams.items():
                per_dataset = ", ".join(f"{d}: {v}" for d, v in hp.per_dataset.items())
                default = f"{hp.default}" + (f" ({per_dataset})" if per_dataset else "")
                search = f", tuned in {list(hp.search)}{' log' if hp.log else ''}" if hp.search else ""
                valid = "true/false" if isinstance(hp.default, bool) else hp.describe_range()
                print(f"{'':10s}   {hp_name} = {default}  valid {valid}{search}. {hp.help}")
    else:
        for name, cls in registry.datasets().items():
            if name in registry.list_names("datasets", args.pattern):
                print(f"{name:16s} {cls.summary}")


def cmd_data_info(args: argparse.Namespace) -> None:
    from bench.datacard import dataset_card

    print(dataset_card(args.name, args.data, workspace_from(args).data_cache))


def cmd_run(args: argparse.Namespace) -> None:
    from bench.runner import run_spec
    from bench.spec import make_spec
    from bench.trainer import resolve_device

    overrides = parse_assignments(args.set)
    spec = make_spec(args.dataset, args.method, args.seed, overrides=overrides, protocol=args.protocol,
                     label_seed=args.label_seed, val_variant=args.val_variant, device=resolve_device(args.device),
                     data_dir=args.data, weights=args.weights)
    source = {"kind": "manual", "values": overrides} if overrides else {"kind": "defaults"}
    record, trained = run_spec(spec, workspace_from(args), hparam_source=source)
    state = "trained" if trained else "already recorded"
    print(f"{spec.variant} on {spec.dataset} seed {spec.seed} ({state}, run {record['run_key']}): "
          f"val mAP {record['val_map']:.2f}, test mAP {record['test_map']:.2f}, best epoch {record['best_epoch']}")


def cmd_bench(args: argparse.Namespace) -> None:
    from bench.grid import load_grid, run_grid

    grid = load_grid(Path(args.config))
    if args.dataset:
        grid.datasets = args.dataset
    if args.variants:
        grid.variants = args.variants
    if args.seeds:
        grid.seeds = args.seeds
    if args.device:
        grid.device = args.device
    if args.data:
        grid.data_dirs.update({dataset: args.data for dataset in grid.datasets})
    grid.overrides.update(parse_assignments(args.set))
    workspace = workspace_from(args)
    trained, skipped = run_grid(grid.specs(), workspace)
    print(f"bench: {trained} run(s) trained, {skipped} already recorded", flush=True)
    if not args.no_report:
        write_report(workspace.results, Path(args.out))


def write_report(results: Path, out: Path) -> None:
    from bench.records import read_records
    from bench.report import write_leaderboard

    records = read_records(results)
    write_leaderboard(records, out)
    print(f"report: {out} written from {len(records)} record(s)")


def cmd_report(args: argparse.Namespace) -> None:
    write_report(Path(args.results), Path(args.out))


def build_parser() -> argparse.ArgumentParser:
    common = OneLineParser(add_help=False)
    common.add_argument("--results", default=str(DEFAULT_RESULTS), help="run records folder (default: results)")
    common.add_argument("--cache", default=str(DEFAULT_CACHE),
                        help="folder for built datasets and checkpoints (default: .pamlbench)")
    parser = OneLineParser(prog="pamlbench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    listing = commands.add_parser("list", help="list registered methods or datasets", parents=[common])
    listing.add_argument("kind", choices=["methods", "datasets"])
    listing.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern, e.g. 'll-*'")
    listing.set_defaults(handler=cmd_list)

    data = commands.add_parser("data", help="dataset commands").add_subparsers(dest="data_command", required=True,
                                                                              parser_class=OneLineParser)
    info = data.add_parser("info", help="print a dataset's card", parents=[common])
    info.add_argument("name")
    info.add_argument("--data", help="prepared dataset folder (for datasets that need one)")
    info.set_defaults(handler=cmd_data_info)

    def add_run_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                         help="hyperparameter override (trainer: lr, batch_size, epochs, head_lr_mult, boost_alpha, "
                              "backbone; or the method's own), repeatable")
        sub.add_argument("--data", help="prepared dataset folder (for datasets that need one)")

    run = commands.add_parser("run", help="train one run (skipped if already recorded)", parents=[common])
    run.add_argument("--dataset", default="digits-mosaic")
    run.add_argument("--method", required=True, help="variant, e.g. an, ll-r+boostlu, an+boostlu-infer")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--protocol", default="single-positive", help="single-positive or partial-<fraction>")
    run.add_argument("--label-seed", type=int, default=1200, help="seed of the observed-label draw (default 1200)")
    run.add_argument("--val-variant", default="clean", help="clean (full val labels) or observed (single positive)")
    run.add_argument("--device", default="auto", help="auto, cpu or cuda")
    run.add_argument("--weights", help="backbone weights: 'imagenet' (torch cache) or a local file")
    add_run_options(run)
    run.set_defaults(handler=cmd_run)

    bench = commands.add_parser("bench", help="run the benchmark grid, then write the leaderboard",
                                parents=[common])
    bench.add_argument("--config", default=str(DEFAULT_GRID), help="benchmark TOML file (default: benchmark.toml)")
    bench.add_argument("--dataset", action="append", help="only these datasets (repeatable)")
    bench.add_argument("--variants", nargs="+", help="only these variants")
    bench.add_argument("--seeds", nargs="+", type=int, help="only these seeds")
    bench.add_argument("--device", help="auto, cpu or cuda")
    bench.add_argument("--out", default=str(DEFAULT_LEADERBOARD), help="leaderboard file (default: leaderboard.md)")
    bench.add_argument("--no-report", action="store_true", help="do not write the leaderboard")
    add_run_options(bench)
    bench.set_defaults(handler=cmd_bench)

    report = commands.add_parser("report", help="write the leaderboard from the run records", parents=[common])
    report.add_argument("--out", default=str(DEFAULT_LEADERBOARD))
    report.set_defaults(handler=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.handler(args)
    except UserError as error:
        print(f"pamlbench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pamlbench: interrupted; finished runs are kept, run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
