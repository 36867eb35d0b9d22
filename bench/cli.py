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
FORMAT_SUFFIX = {"md": "md", "csv": "csv", "latex": "tex"}


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


def cmd_data_prepare(args: argparse.Namespace) -> None:
    from bench.datacard import size_check
    from bench.prepared import PreparedDataset, prepare

    plugin = registry.load_dataset(args.name)
    if not isinstance(plugin, PreparedDataset):
        raise UserError(f"dataset {args.name!r} is built in and needs no preparation")
    manifest = prepare(plugin, Path(args.raw), Path(args.out), cache_size=args.size if args.cache else None,
                       label_seeds=tuple(args.label_seeds), verify=not args.no_verify)
    sizes = manifest["splits"]
    print(f"prepared {args.name} in {args.out}: {sizes['train']} train, {sizes['val']} val, {sizes['test']} test "
          f"images, {len(manifest['class_names'])} classes" + (f", decoded cache {args.size}px" if args.cache else ""))
    print(size_check(plugin, sizes))


def cmd_run(args: argparse.Namespace) -> None:
    from bench.runner import run_spec
    from bench.spec import make_spec
    from bench.trainer import resolve_device

    overrides = parse_assignments(args.set)
    spec = make_spec(args.dataset, args.method, args.seed, overrides=overrides, protocol=args.protocol,
                     label_seed=args.label_seed, val_variant=args.val_variant, device=resolve_device(args.device),
                     data_dir=args.data, weights=args.weights)
    source = {"kind": "manual", "values": overrides} if overrides else {"kind": "defaults"}
    workspace = workspace_from(args)
    workspace.ensure_writable()
    outcome = run_spec(spec, workspace, hparam_source=source, claims=claim_store(args, workspace))
    record = outcome.record
    title = f"{spec.variant} on {spec.dataset} seed {spec.seed}"
    if outcome.state == "elsewhere":
        print(f"{title}: being trained by another worker")
    elif record["status"] != "done":
        print(f"{title} (run {record['run_key']}): FAILED, recorded as failed: {record['error']}")
        raise SystemExit(1)
    else:
        print(f"{title} ({outcome.state}, run {record['run_key']}): val mAP {record['val_map']:.2f}, "
              f"test mAP {record['test_map']:.2f}, best epoch {record['best_epoch']}")


def tracker_from(args: argparse.Namespace, workspace):
    """The MLflow tracker, or None with --no-tracking."""
    if args.no_tracking:
        return None
    from bench.tracking import Tracker

    return Tracker(workspace.cache)


def grid_file(config: str) -> Path:
    """The grid file: as given, or, for the default name missing from the working folder, the project's own."""
    path = Path(config)
    if config == str(DEFAULT_GRID) and not path.exists():
        return registry.PROJECT_ROOT / DEFAULT_GRID
    return path


def cmd_tune(args: argparse.Namespace) -> None:
    from bench.grid import load_grid
    from bench.trainer import resolve_device
    from bench.tuning import tune

    grid = load_grid(grid_file(args.config))
    workspace = workspace_from(args)
    workspace.ensure_writable()
    storage = args.storage or f"sqlite:///{(workspace.cache / 'optuna.db').resolve()}"
    workspace.cache.mkdir(parents=True, exist_ok=True)
    tracker = tracker_from(args, workspace)
    overrides = {**grid.overrides, **parse_assignments(args.set)}
    for dataset in args.dataset or grid.datasets:
        for variant in args.variants or grid.variants:
            summary = tune(dataset, variant, n_trials=args.n_trials, storage_url=storage, results=workspace.results,
                           data_cache=workspace.data_cache, seed=args.seed, pruner=args.pruner, overrides=overrides,
                           device=resolve_device(args.device or grid.device), protocol=grid.protocol,
                           val_variant=grid.val_variant, data_dir=args.data or grid.data_dirs.get(dataset),
                           tracker=tracker, heartbeat=args.heartbeat)
            print(f"tune {summary['study']}: best val mAP {summary['best_value']:.2f} "
                  f"({summary['n_trials']} trials, {summary['pruned']} pruned, {summary['epochs_trained']} epochs) "
                  f"with {summary['best_params']}", flush=True)


def claim_store(args: argparse.Namespace, workspace):
    from bench.claims import ClaimStore

    return ClaimStore(args.storage or workspace.default_claims_url())


def cmd_bench(args: argparse.Namespace) -> None:
    from bench.grid import load_grid, run_grid
    from bench.runner import remove_failed

    grid = load_grid(grid_file(args.config))
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
    workspace.ensure_writable()
    claims = claim_store(args, workspace)
    specs = grid.specs()
    if args.retry_failed:
        print(f"bench: {remove_failed(specs, workspace, claims)} failed run(s) will be trained again")
    counts = run_grid(grid.cells(workspace.results), workspace, claims=claims, tracker=tracker_from(args, workspace))
    print(f"bench: {counts['trained']} run(s) trained, {counts['failed']} failed, {counts['recorded']} already "
          f"recorded, {counts['elsewhere']} left to other workers", flush=True)
    if not args.no_report:
        report(workspace.results, Path(args.out), "md")
        if counts["trained"]:
            figures(workspace, grid.datasets)


def report(results: Path, out: Path, fmt: str) -> None:
    from bench.records import read_records
    from bench.report import write_report

    records = read_records(results)
    written = write_report(records, out, results, fmt)
    print(f"report: {out} written from {len(records)} record(s)" + (f", and {len(written) - 1} table/figure file(s)"
                                                                    if len(written) > 1 else ""))


def figures(workspace, datasets: list[str]) -> None:
    from bench.figures import cam_figures
    from bench.records import read_records

    records = read_records(workspace.results)
    for dataset in datasets:
        try:
            written = cam_figures(records, dataset, workspace.checkpoints, workspace.data_cache,
                                  workspace.results / "figures")
        except UserError as error:
            print(f"figures: skipped for {dataset}: {error}")
            continue
        for path in written:
            print(f"figures: {path}")


def cmd_report(args: argparse.Namespace) -> None:
    report(Path(args.results), Path(args.out) if args.out else Path(f"leaderboard.{FORMAT_SUFFIX[args.format]}"),
           args.format)


def cmd_figures(args: argparse.Namespace) -> None:
    figures(workspace_from(args), args.dataset or ["digits-mosaic"])


def set_threads(threads: int) -> None:
    import torch

    if threads < 1:
        raise UserError(f"--threads {threads} must be at least 1")
    torch.set_num_threads(threads)


def build_parser() -> argparse.ArgumentParser:
    common = OneLineParser(add_help=False)
    common.add_argument("--results", default=str(DEFAULT_RESULTS), help="run records folder (default: results)")
    common.add_argument("--cache", default=str(DEFAULT_CACHE),
                        help="folder for built datasets and checkpoints (default: .pamlbench)")
    common.add_argument("--threads", type=int, help="CPU threads for torch (default: every core this process may "
                                                     "use; give each of several workers on one machine its share)")
    common.add_argument("--storage", help="SQLAlchemy URL shared by workers (claims; Optuna studies), e.g. "
                                          "postgresql://user@host/db (default: a SQLite file in the results folder)")
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
    prep = data.add_parser("prepare", help="prepare a real dataset from its official files")
    prep.add_argument("name", help="voc, coco, nuswide, cub or openimages")
    prep.add_argument("--raw", required=True, help="folder with the unpacked official download")
    prep.add_argument("--out", required=True, help="new folder for the prepared dataset (must not exist)")
    prep.add_argument("--cache", action="store_true", help="also write a decoded uint8 image cache (fast training)")
    prep.add_argument("--size", type=int, default=448, help="image side of the cache (default 448)")
    prep.add_argument("--label-seeds", type=int, nargs="+", default=[1200],
                      help="seeds of the single-positive draws to store (default 1200)")
    prep.add_argument("--no-verify", action="store_true", help="skip decoding every image once (faster)")
    prep.set_defaults(handler=cmd_data_prepare)

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
    bench.add_argument("--retry-failed", action="store_true", help="train runs recorded as failed again")
    bench.add_argument("--no-tracking", action="store_true", help="do not log runs to MLflow")
    add_run_options(bench)
    bench.set_defaults(handler=cmd_bench)

    tune_cmd = commands.add_parser("tune", help="tune hyperparameters with Optuna (one study per variant)",
                                   parents=[common])
    tune_cmd.add_argument("--config", default=str(DEFAULT_GRID), help="grid whose datasets/variants are tuned")
    tune_cmd.add_argument("--dataset", action="append", help="only these datasets (repeatable)")
    tune_cmd.add_argument("--variants", nargs="+", help="only these variants")
    tune_cmd.add_argument("--n-trials", type=int, default=20, help="finished trials per study (default 20)")
    tune_cmd.add_argument("--pruner", default="median", help="median (default), hyperband or none")
    tune_cmd.add_argument("--seed", type=int, default=0, help="training seed of every trial and the TPE seed")
    tune_cmd.add_argument("--device", help="auto, cpu or cuda")
    tune_cmd.add_argument("--no-tracking", action="store_true", help="do not log trials to MLflow")
    tune_cmd.add_argument("--heartbeat", type=int, default=30,
                          help="trial heartbeat in seconds; a trial silent for 3 beats is failed and retried")
    add_run_options(tune_cmd)
    tune_cmd.set_defaults(handler=cmd_tune)

    report_cmd = commands.add_parser("report", help="write the leaderboard from the run records", parents=[common])
    report_cmd.add_argument("--format", choices=list(FORMAT_SUFFIX), default="md",
                            help="md: leaderboard with details, per-class AP CSVs and curves; csv/latex: tables only")
    report_cmd.add_argument("--out", help="output file (default: leaderboard.md / .csv / .tex)")
    report_cmd.set_defaults(handler=cmd_report)

    figures_cmd = commands.add_parser("figures", help="draw the CAM figures from the best-epoch checkpoints",
                                      parents=[common])
    figures_cmd.add_argument("--dataset", action="append", default=None, help="datasets (default: digits-mosaic)")
    figures_cmd.set_defaults(handler=cmd_figures)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "threads", None):
            set_threads(args.threads)
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
