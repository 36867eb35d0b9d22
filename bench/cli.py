"""The `pamlbench` command line: list, data info, data prepare, run, bench, tune, report, figures.

Every command validates its whole input before it writes anything. A user error (unknown name, bad value, a path of
the wrong kind, an unreadable file, a storage that cannot be reached) prints one line `pamlbench: error: ...` on
stderr and exits with status 2. SIGINT and SIGTERM (what cluster schedulers send) stop a command the same way: the
run in progress gives its claim back and its MLflow run is marked KILLED, finished records are kept, and the exit
status is 130 or 143; a second signal during that cleanup is ignored.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from bench import registry
from bench.arguments import (
    SEED,
    OneLineParser,
    cluster_address,
    folder_argument,
    folder_or_new,
    gpu_share,
    input_file,
    integer,
    output_file,
    parse_assignments,
    positive_seconds,
)
from bench.claims import HEARTBEAT_SECONDS
from bench.cluster import DEFAULT_RETRIES, EMBEDDED_GPU_SHARE
from bench.errors import UserError
from bench.observation import COLE_SEED
from bench.recipes import RECIPES
from bench.signals import STOPPING, ignore_late_signals, stop_on_signal
from bench.workspace import DEFAULT_CACHE, DEFAULT_RESULTS, Workspace

DEFAULT_LEADERBOARD = Path("leaderboard.md")
DEFAULT_GRID = Path("benchmark.toml")
FORMAT_SUFFIX = {"md": "md", "csv": "csv", "latex": "tex"}


def workspace_from(args: argparse.Namespace) -> Workspace:
    workspace = Workspace(results=Path(getattr(args, "results", DEFAULT_RESULTS)),
                          cache=Path(getattr(args, "cache", DEFAULT_CACHE)), storage=getattr(args, "storage", None))
    workspace.check_paths()
    return workspace


def grid_file(config: str) -> Path:
    """The grid file: as given, or, for the default name missing from the working folder, the project's own."""
    path = Path(config)
    if config == str(DEFAULT_GRID) and not path.exists():
        return registry.PROJECT_ROOT / DEFAULT_GRID
    return input_file(path, "benchmark file")


# --- commands -------------------------------------------------------------------------------------------------------

def cmd_list(args: argparse.Namespace) -> None:
    if args.kind == "datasets":
        for name in registry.list_names("datasets", args.pattern):
            print(f"{name:16s} {registry.dataset_class(name).summary}")
        return
    from bench.spec import TRAINING_HPARAMS, trainer_defaults
    from bench.tuning import learning_rate_range, search_ranges

    dataset = args.dataset
    if dataset is None and args.pattern == "*":
        print("trainer    settings of every method (`--set NAME=VALUE`; each dataset's defaults: `list methods "
              "--dataset D`)")
        for hp_name, hp in TRAINING_HPARAMS.items():
            valid = "true/false" if isinstance(hp.default, bool) else (
                "|".join(hp.choices) if hp.choices else hp.describe_range())
            print(f"{'':10s}   {hp_name} = {hp.default}  valid {valid}. {hp.help}")
        print("variants   METHOD, METHOD+boostlu (BoostLU in training and inference), METHOD+boostlu-train, "
              "METHOD+boostlu-infer, METHOD+li (LinearInit: a linear stage, then end to end); "
              "`--set freeze_backbone=true` gives the linear setting of any method without BoostLU")
    if dataset is not None:
        registry.dataset_class(dataset)
        defaults = trainer_defaults(dataset)
        print(f"on {dataset}: trainer defaults {', '.join(f'{k}={v}' for k, v in defaults.items())}; learning rate "
              f"tuned in {describe_range(learning_rate_range(dataset))}")
    for name in registry.list_names("methods", args.pattern):
        cls = registry.method_class(name)
        print(f"{name:10s} {cls.summary}")
        ranges = search_ranges(dataset, name) if dataset is not None else {}
        for hp_name, hp in cls.hparams.items():
            if dataset is not None:
                default = f"{hp.default_for(dataset)}"
                search = f", tuned in {describe_range(ranges[hp_name])}" if hp_name in ranges else ""
            else:
                per_dataset = ", ".join(f"{d}: {v}" for d, v in hp.per_dataset.items())
                default = f"{hp.default}" + (f" ({per_dataset})" if per_dataset else "")
                search = f", tuned in {list(hp.search)}{' log' if hp.log else ''}" if hp.search else ""
            valid = "true/false" if isinstance(hp.default, bool) else (
                "|".join(hp.choices) if hp.choices else hp.describe_range())
            print(f"{'':10s}   {hp_name} = {default}  valid {valid}{search}. {hp.help}")


def describe_range(bounds: tuple[float, float]) -> str:
    return f"[{bounds[0]:.3g}, {bounds[1]:.3g}]"


def cmd_data_info(args: argparse.Namespace) -> None:
    from bench.datacard import dataset_card

    folder_argument(args.data, "--data")
    print(dataset_card(args.name, args.data, workspace_from(args).data_cache, args.label_seed))


def cmd_data_prepare(args: argparse.Namespace) -> None:
    from bench.datacard import size_check
    from bench.preparation import prepare
    from bench.prepared import PreparedDataset

    plugin = registry.load_dataset(args.name)
    if not isinstance(plugin, PreparedDataset):
        raise UserError(f"dataset {args.name!r} is built in and needs no preparation")
    folder_argument(args.raw, "--raw")
    manifest = prepare(plugin, Path(args.raw), Path(args.out), cache_size=args.size if args.image_cache else None,
                       verify=not args.no_verify)
    sizes = manifest["splits"]
    print(f"prepared {args.name} in {args.out}: {sizes['train']} train, {sizes['val']} val, {sizes['test']} test "
          f"images, {len(manifest['class_names'])} classes"
          + (f", decoded cache {args.size}px" if args.image_cache else ""))
    print(size_check(plugin, sizes))


def cmd_run(args: argparse.Namespace) -> None:
    from bench.grid import load_grid
    from bench.rundata import resolve_device
    from bench.runner import run_spec
    from bench.spec import make_spec

    overrides = parse_assignments(args.set)
    dataset = args.dataset or load_grid(registry.PROJECT_ROOT / DEFAULT_GRID).datasets[0]
    spec = make_spec(dataset, args.method, args.seed, overrides=overrides, protocol=args.protocol,
                     label_seed=args.label_seed, device=resolve_device(args.device),
                     data_dir=folder_argument(args.data, "--data"), weights=args.weights)
    if args.weights not in (None, "imagenet", "none") and not Path(args.weights).is_file():
        raise UserError(f"weights file {args.weights} does not exist")
    source = {"kind": "manual", "values": overrides} if overrides else {"kind": "defaults"}
    workspace = workspace_from(args)
    claims, tracker = open_stores(args, workspace)
    workspace.ensure_writable()
    outcome = run_spec(spec, workspace, hparam_source=source, claims=claims, tracker=tracker)
    record = outcome.record
    title = f"{spec.variant} on {spec.dataset} seed {spec.seed}"
    if outcome.state == "elsewhere":
        print(f"{title}: being trained by another worker")
    elif record["status"] != "done":
        print(f"{title} (run {record['run_key']}): FAILED, recorded as failed: {record['error']}")
        raise SystemExit(1)
    else:
        picks = ", ".join(f"{name} {choice['test_map']:.2f} (epoch {choice['epoch']})"
                          for name, choice in record["selections"].items())
        print(f"{title} ({outcome.state}, run {record['run_key']}): test mAP by selection: {picks}")


def tracker_from(args: argparse.Namespace, workspace: Workspace):
    """The MLflow tracker, or None with --no-tracking."""
    if args.no_tracking:
        return None
    from bench.tracking import Tracker

    return Tracker(workspace.cache, workspace.tracking_uri())


def open_stores(args: argparse.Namespace, workspace: Workspace):
    """(claims, tracker): the stores a run writes to, opened remote ones first, so that a storage or tracking
    server that cannot be reached is an error before any local file is created."""
    from bench.claims import ClaimStore

    claims = ClaimStore(workspace.claims_url()) if workspace.storage else None
    workspace.check_writable()
    tracker = tracker_from(args, workspace)
    return claims or ClaimStore(workspace.claims_url()), tracker


def grid_from(args: argparse.Namespace):
    """The grid of benchmark.toml (or --config) narrowed by the command-line options, validated."""
    from bench.grid import load_grid

    overrides = parse_assignments(args.set)
    grid = load_grid(grid_file(args.config)).narrow(
        datasets=args.dataset, variants=args.variants, seeds=getattr(args, "seeds", None), overrides=overrides,
        data=folder_argument(args.data, "--data"), device=args.device, label_seed=args.label_seed,
        recipes=args.recipe)
    grid.check_overrides(list(overrides), "--set")
    return grid


def worker_plan(args: argparse.Namespace, grid):
    """The local worker plan of --jobs/--threads (None with --cluster, whose resources decide); this process's
    torch threads are set to the plan's, as the run keys computed here must be the workers'."""
    if args.cluster:
        if args.jobs is not None:
            raise UserError("--jobs sets local worker processes; with --cluster the cluster's CPUs and GPUs decide "
                            "(set --threads per cell instead)")
        return None
    import torch

    from bench.rundata import resolve_device
    from bench.workers import plan_workers

    plan = plan_workers(args.jobs, args.threads, resolve_device(grid.device))
    torch.set_num_threads(plan.threads)
    return plan


def cmd_bench(args: argparse.Namespace) -> None:
    from bench.runner import remove_failed, run_grid

    grid = grid_from(args)
    workspace = workspace_from(args)
    out = output_file(args.out, inputs=(grid_file(args.config),), results=workspace.results)
    options = task_options(args, workspace)
    plan = worker_plan(args, grid)
    if args.cluster:  # the cluster's resources decide the device; the specs are built (and keyed) here
        requested_device, grid = grid.device, grid.narrow(device="cpu")
    cells, skipped = grid.cells(workspace.tuned)
    for line in skipped:
        print(f"bench: skipped: {line}", flush=True)
    if not cells:
        raise UserError(f"nothing to train: {skipped[0]}" if skipped else "nothing to train")
    if args.plan:
        show_plan(args, grid, cells, workspace)
        return
    resources = join_cluster(args)
    claims, tracker = open_stores(args, workspace)
    workspace.ensure_writable()
    if args.retry_failed:
        print(f"bench: {remove_failed([spec for spec, _ in cells], workspace, claims)} failed run(s) will be "
              "trained again")
    if args.cluster:
        from bench.cluster import run_on_cluster

        counts = run_on_cluster(cells, workspace, args.cluster, resources, options, device=requested_device,
                                claims=claims, tracker=tracker)
    else:
        counts = run_grid(cells, workspace, plan=plan, claims=claims, tracker=tracker)
    lost = counts.get("lost", 0)
    print(f"bench: {counts['trained']} run(s) trained, {counts['failed']} failed, {counts['recorded']} already "
          f"recorded, {counts['elsewhere']} left to other workers" + (f", {lost} not trained (see above)"
                                                                      if lost else ""), flush=True)
    if not args.no_report:
        report(workspace, out, "md", force=False)
        figures(workspace, grid.datasets, redraw=bool(counts["trained"]))
    if lost:
        raise SystemExit(1)


def show_plan(args: argparse.Namespace, grid, cells, workspace: Workspace) -> None:
    """Print every cell with its settings' origins and whether it is recorded; train and write nothing."""
    from bench.plan import print_plan
    from bench.records import record_path

    cli = set(parse_assignments(args.set))
    statuses = ["recorded" if record_path(workspace.results, spec.key(spec.identity(workspace.data_cache))).exists()
                else "to train" for spec, _ in cells]
    print_plan(cells, statuses, cli=cli, grid_file=set(grid.overrides) - cli)


def join_cluster(args: argparse.Namespace) -> dict[str, float] | None:
    """The resources of the Ray cluster of --cluster (joined now, before anything local is written), or None."""
    if not args.cluster:
        return None
    from bench.cluster import connect

    return connect(args.cluster)


def task_options(args: argparse.Namespace, workspace: Workspace):
    """The Ray task options of --cluster (None without it); UserError for a cluster option given without it."""
    from bench.cluster import TaskOptions

    if not args.cluster:
        given = [option for option, value in (("--gpus-per-cell", args.gpus_per_cell), ("--worker-cache",
                 args.worker_cache), ("--retries", args.retries)) if value is not None]
        if given:
            raise UserError(f"{given[0]} only applies with --cluster")
        return None
    cache = folder_or_new(args.worker_cache, "--worker-cache") if args.worker_cache else workspace.cache.resolve()
    return TaskOptions(threads=args.threads or 1, gpus=args.gpus_per_cell,
                       retries=DEFAULT_RETRIES if args.retries is None else args.retries, worker_cache=str(cache))


def cmd_tune(args: argparse.Namespace) -> None:
    from bench.tuning import check_storage, tune_locally

    grid = grid_from(args)
    workspace = workspace_from(args)
    budget = grid.tuning.model_copy(update={name: value for name, value in (
        ("n_trials", args.n_trials), ("pruner", args.pruner), ("seed", args.seed),
        ("objective", args.val_variant)) if value is not None})
    options = task_options(args, workspace)
    plan = worker_plan(args, grid)
    spec_grid = grid.narrow(device="cpu") if args.cluster else grid  # on a cluster, its resources pick the device
    base_specs, budget = study_bases(spec_grid, args.recipe or ["tuned"], budget)
    if args.plan:
        from bench.plan import print_plan, space_text
        from bench.tuning import paper_settings, study_space

        cli = set(parse_assignments(args.set))
        print(f"tune: each study {budget.describe()}")
        statuses = [f"to tune: searches {space_text(study_space(grid, spec))}" for spec in base_specs]
        sources = [{"kind": spec.recipe, "values": paper_settings(spec)} for spec in base_specs]
        print_plan(list(zip(base_specs, sources, strict=True)), statuses, cli=cli,
                   grid_file=set(grid.overrides) - cli)
        return
    resources = join_cluster(args)
    if workspace.storage:
        check_storage(workspace.optuna_url())
    tracker = tracker_from(args, workspace)
    workspace.ensure_writable()
    print(f"tune: {len(base_specs)} stud{'y' if len(base_specs) == 1 else 'ies'}, each {budget.describe()}",
          flush=True)
    if args.cluster:
        from bench.cluster import tune_on_cluster

        for summary in tune_on_cluster(grid, base_specs, workspace, resources, options, budget,
                                       heartbeat=args.heartbeat, tracker=tracker):
            print_tune_summary(summary)
    else:
        tune_locally(grid, base_specs, workspace, budget, plan, on_summary=print_tune_summary, tracker=tracker,
                     heartbeat=args.heartbeat)


def study_bases(grid, recipes: list[str], budget):
    """(the base spec of every study `tune` runs, the budget they share): under `tuned` (the default) each cell's
    equal-budget study; under `paper` the grid study of each variant whose paper published only its search. Other
    recipes, and papers that published their values, have nothing to search (UserError if nothing is left)."""
    from bench.recipes import paper_recipe
    from bench.tuning import grid_budget, study_space

    if set(recipes) - {"tuned", "paper"} or len(recipes) > 1:
        raise UserError("tune --recipe: give one of tuned (the equal-budget studies, the default) or paper (the "
                        "papers' grid studies); the defaults recipe has nothing to search")
    if recipes == ["tuned"]:
        return [grid.base_spec(dataset, variant, budget.seed) for dataset in grid.datasets
                for variant in grid.variants], budget
    bases, skipped = [], []
    for dataset in grid.datasets:
        for variant in grid.variants:
            try:
                paper = paper_recipe(dataset, variant)
            except UserError as error:
                skipped.append(str(error))
                continue
            if not paper.search:
                skipped.append(f"{variant} on {dataset}: {paper.paper} published its values; nothing to search")
                continue
            bases.append(grid.base_spec(dataset, variant, budget.seed, paper.settings, recipe="paper"))
    for line in skipped:
        print(f"tune: skipped: {line}", flush=True)
    if not bases:
        raise UserError(f"tune --recipe paper: no grid study to run: {skipped[0]}")
    spaces = {repr(study_space(grid, base)) for base in bases}
    if len(spaces) > 1:
        raise UserError("tune --recipe paper: these grid studies search different grids; tune one paper's variants "
                        "at a time (--variants)")
    return bases, grid_budget(budget, study_space(grid, bases[0]))


def print_tune_summary(summary: dict[str, Any]) -> None:
    check = summary["convergence"]
    still = (f"; STILL IMPROVING: +{check['gain']:.2f} over the last third of the trials" if check["improving"]
             and check["gain"] is not None else "")
    print(f"tune {summary['study']}: best val mAP {summary['best_value']:.2f} ({summary['n_trials']} trials, "
          f"{summary['pruned']} pruned, {summary['epochs_trained']} epochs) with {summary['best_params']}{still}",
          flush=True)


def report(workspace: Workspace, out: Path, fmt: str, force: bool) -> None:
    from bench.records import read_records
    from bench.report import write_report

    if not workspace.results.is_dir():
        raise UserError(f"results folder {workspace.results} does not exist; run `pamlbench bench` first or give "
                        "--results")
    records = read_records(workspace.results)
    written = write_report(records, out, workspace, fmt, force=force)
    print(f"report: {out} written from {len(records)} record(s)" + (f", and {len(written) - 1} table/figure file(s)"
                                                                    if len(written) > 1 else ""))


def figures(workspace: Workspace, datasets: list[str], redraw: bool) -> None:
    """Draw the checkpoint figures of `datasets`: all of them when `redraw`, else only those missing."""
    from bench.figures import checkpoint_figures
    from bench.records import read_records

    records = read_records(workspace.results)
    for dataset in datasets:
        try:
            written = checkpoint_figures(records, dataset, workspace, only_missing=not redraw)
        except UserError as error:
            print(f"figures: skipped for {dataset}: {error}")
            continue
        for path in written:
            print(f"figures: {path}")


def cmd_report(args: argparse.Namespace) -> None:
    workspace = workspace_from(args)
    out = output_file(args.out or f"leaderboard.{FORMAT_SUFFIX[args.format]}", results=workspace.results)
    report(workspace, out, args.format, force=args.force)


def cmd_figures(args: argparse.Namespace) -> None:
    from bench.records import read_records

    workspace = workspace_from(args)
    for name in args.dataset or []:
        registry.dataset_class(name)
    recorded = sorted({r["spec"]["dataset"] for r in read_records(workspace.results)})
    figures(workspace, args.dataset or recorded, redraw=True)


# --- the parser -----------------------------------------------------------------------------------------------------

def storage_options(*, results: bool = True, cache: bool = True, threads: bool = True,
                    storage: bool = True) -> argparse.ArgumentParser:
    """A parent parser with the folder and storage options a command uses (and only those, so that its help lists
    what it uses); `workspace_from` fills in the defaults of the ones it does not take."""
    parser = OneLineParser(add_help=False)
    if results:
        parser.add_argument("--results", default=str(DEFAULT_RESULTS), help="run records folder (default: results)")
    if cache:
        parser.add_argument("--cache", default=str(DEFAULT_CACHE),
                            help="folder for built datasets, checkpoints, Optuna and MLflow (default: .pamlbench)")
    if threads:
        parser.add_argument("--threads", type=integer("--threads", 1, 1025),
                            help="CPU threads for torch in each worker (default: 1 with one worker per core for "
                                 "bench and tune; every core for run). The thread count is part of a CPU run's "
                                 "numerics, so it is in the run key")
    if storage:
        parser.add_argument("--storage", help="SQLAlchemy URL shared by workers (claims and Optuna studies), e.g. "
                                              "postgresql://user@host/db (default: SQLite files in --results and "
                                              "--cache)")
    return parser


def add_grid_options(parser: argparse.ArgumentParser, *, seeds: bool = True) -> None:
    """The options `bench` and `tune` share: which grid, narrowed how (`tune` trains its own seed, not the grid's)."""
    parser.add_argument("--config", default=str(DEFAULT_GRID), help="benchmark TOML file (default: benchmark.toml)")
    parser.add_argument("--dataset", action="append", help="only these datasets (repeatable)")
    parser.add_argument("--variants", nargs="+", help="only these variants")
    if seeds:
        parser.add_argument("--seeds", nargs="+", type=SEED, help="only these seeds")
    parser.add_argument("--label-seed", type=SEED, help="seed of the observed-label draw (default: the grid's, "
                                                        f"else {COLE_SEED})")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the grid's (auto)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="hyperparameter override for every cell that uses it, repeatable")
    parser.add_argument("--data", help="prepared dataset folder of the selected datasets")
    parser.add_argument("--recipe", action="append", choices=RECIPES,
                        help="where the settings come from (repeatable): tuned (the equal-budget study's best), paper "
                             "(the method's own paper; with tune, its grid study), defaults (default: the grid "
                             "file's, else each dataset's: tuned and defaults on the mosaics, paper on real data)")
    parser.add_argument("--no-tracking", action="store_true", help="do not log runs to MLflow")
    parser.add_argument("--plan", action="store_true",
                        help="print every cell (or study) with its resolved settings and where each value came from; "
                             "train nothing")
    parser.add_argument("--cluster", metavar="ADDRESS", type=cluster_address,
                        help="run the cells (or trials) as Ray tasks on the cluster at ADDRESS (HOST:PORT of its "
                             "head), or 'auto' for every CPU and GPU of this machine; needs pamlbench[cluster]")
    parser.add_argument("--gpus-per-cell", type=gpu_share, metavar="F",
                        help=f"with --cluster on GPUs: GPUs per task (default 1 for prepared datasets, "
                             f"{EMBEDDED_GPU_SHARE} for built-in ones)")
    parser.add_argument("--retries", type=integer("--retries", 0),
                        help=f"with --cluster: times a task whose worker or node died is run again (default "
                             f"{DEFAULT_RETRIES})")
    parser.add_argument("--jobs", type=integer("--jobs", 1, 1025),
                        help="local worker processes training cells (or tuning studies) at once (default: one per "
                             "core, with --threads 1; `--jobs 1 --threads 2`: one process of 2 threads)")
    parser.add_argument("--worker-cache", metavar="DIR",
                        help="with --cluster: folder on every node for built datasets and epoch checkpoints "
                             "(default: this --cache, as an absolute path); a shared path lets a retried task "
                             "resume on another node")


def build_parser() -> argparse.ArgumentParser:
    common = storage_options()
    parser = OneLineParser(prog="pamlbench", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    listing = commands.add_parser("list", help="list registered methods or datasets")
    listing.add_argument("kind", choices=["methods", "datasets"])
    listing.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern, e.g. 'll-*'")
    listing.add_argument("--dataset", help="show the defaults and tuning ranges on this dataset")
    listing.set_defaults(handler=cmd_list)

    data = commands.add_parser("data", help="dataset commands").add_subparsers(dest="data_command", required=True,
                                                                              parser_class=OneLineParser)
    info = data.add_parser("info", help="print a dataset's card",
                           parents=[storage_options(results=False, threads=False, storage=False)])
    info.add_argument("name")
    info.add_argument("--data", help="prepared dataset folder (for datasets that need one)")
    info.add_argument("--label-seed", type=SEED, default=COLE_SEED, help=f"label draw to describe ({COLE_SEED})")
    info.set_defaults(handler=cmd_data_info)
    prep = data.add_parser("prepare", help="prepare a real dataset from its official files")
    prep.add_argument("name", help="a dataset that needs preparation (`pamlbench list datasets`)")
    prep.add_argument("--raw", required=True, help="folder with the unpacked official download")
    prep.add_argument("--out", required=True, help="new folder for the prepared dataset (must not exist)")
    prep.add_argument("--image-cache", action="store_true",
                      help="also write a decoded uint8 image cache (fast training; 3 x size^2 bytes per image)")
    prep.add_argument("--size", type=integer("--size", 1, 4097), default=448,
                      help="image side of the cache (default 448)")
    prep.add_argument("--no-verify", action="store_true", help="skip decoding every image once (faster)")
    prep.set_defaults(handler=cmd_data_prepare)

    run = commands.add_parser("run", help="train one run (skipped if already recorded)", parents=[common])
    run.add_argument("--dataset", help="default: the first dataset of the project's benchmark.toml")
    run.add_argument("--method", required=True,
                     help="variant: a method name, optionally +boostlu, +boostlu-train or +boostlu-infer")
    run.add_argument("--seed", type=SEED, default=0)
    run.add_argument("--protocol", default="single-positive", help="single-positive, partial-<fraction>, annotated")
    run.add_argument("--label-seed", type=SEED, default=COLE_SEED,
                     help=f"seed of the observed-label draw (default {COLE_SEED})")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    run.add_argument("--weights", help="backbone weights: 'imagenet' (torch cache) or a local file")
    run.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                     help="hyperparameter override (the trainer's or the method's own), repeatable")
    run.add_argument("--data", help="prepared dataset folder (for datasets that need one)")
    run.add_argument("--no-tracking", action="store_true", help="do not log the run to MLflow")
    run.set_defaults(handler=cmd_run)

    bench = commands.add_parser("bench", help="run the benchmark grid, then write the leaderboard",
                                parents=[common])
    add_grid_options(bench)
    bench.add_argument("--out", default=str(DEFAULT_LEADERBOARD), help="leaderboard file (default: leaderboard.md)")
    bench.add_argument("--no-report", action="store_true", help="do not write the leaderboard")
    bench.add_argument("--retry-failed", action="store_true", help="train runs recorded as failed again")
    bench.set_defaults(handler=cmd_bench)

    tune_cmd = commands.add_parser("tune", help="tune hyperparameters with Optuna (one study per variant)",
                                   parents=[common])
    add_grid_options(tune_cmd, seeds=False)
    tune_cmd.add_argument("--n-trials", type=integer("--n-trials", 1),
                          help="finished trials per study (default: the grid file's [tuning] budget)")
    tune_cmd.add_argument("--pruner", choices=["median", "hyperband", "none"],
                          help="default: the grid file's [tuning] budget")
    tune_cmd.add_argument("--seed", type=SEED,
                          help="training seed of every trial and the TPE seed (default: the grid file's [tuning] "
                               "budget, 100, outside the benchmark's seeds)")
    tune_cmd.add_argument("--val-variant", choices=["clean", "observed"],
                          help="validation labels the trials are scored on (default: the grid file's [tuning] "
                               "objective, clean)")
    tune_cmd.add_argument("--heartbeat", type=positive_seconds, default=HEARTBEAT_SECONDS,
                          help="trial heartbeat in seconds; a trial silent for 3 beats is failed and retried")
    tune_cmd.set_defaults(handler=cmd_tune)

    report_cmd = commands.add_parser("report", help="write the leaderboard from the run records",
                                     parents=[storage_options(cache=False, threads=False, storage=False)])
    report_cmd.add_argument("--format", choices=list(FORMAT_SUFFIX), default="md",
                            help="md: leaderboard with details, per-class AP CSVs and curves; csv/latex: tables only")
    report_cmd.add_argument("--out", help="output file (default: leaderboard.md / .csv / .tex)")
    report_cmd.add_argument("--force", action="store_true",
                            help="replace an existing leaderboard even with one built from no records")
    report_cmd.set_defaults(handler=cmd_report)

    figures_cmd = commands.add_parser("figures", help="draw the CAM figures from the best-epoch checkpoints",
                                      parents=[storage_options(storage=False)])
    figures_cmd.add_argument("--dataset", action="append", default=None,
                             help="datasets (default: every dataset with records)")
    figures_cmd.set_defaults(handler=cmd_figures)
    return parser


def main(argv: list[str] | None = None) -> int:
    STOPPING["now"] = False
    ignore_late_signals()
    threads_before = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    previous = {signum: signal.signal(signum, stop_on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    interrupted = False
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "threads", None) is not None:
            import torch

            torch.set_num_threads(args.threads)
        args.handler(args)
    except UserError as error:
        print(f"pamlbench: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `pamlbench list methods | head`: the reader is done; end quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt as interrupt:
        interrupted = True
        signum = getattr(interrupt, "signum", signal.SIGINT)
        name = "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted"
        print(f"pamlbench: {name}; finished runs are kept, run the same command again to resume", file=sys.stderr)
        return 128 + int(signum)
    finally:
        if not interrupted:  # after a signal they stay ignored: the process is on its way out
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if threads_before is not None:  # a caller in the same process keeps its own thread count
            sys.modules["torch"].set_num_threads(threads_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
