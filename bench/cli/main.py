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
from bench.cli.arguments import (
    folder_argument,
    folder_or_new,
    input_file,
    output_file,
    parse_assignments,
)
from bench.cli.backbone_weights import check_backbone_weights
from bench.cli.parser import DEFAULT_GRID, FORMAT_SUFFIX, build_parser
from bench.errors import UserError, one_line, quoted
from bench.execute.cluster import DEFAULT_RETRIES
from bench.execute.signals import STOPPING, ignore_late_signals, stop_on_signal
from bench.execute.workspace import DEFAULT_CACHE, DEFAULT_RESULTS, Workspace


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
    from bench.plan.studies import learning_rate_range, search_ranges
    from bench.spec import TRAINING_HPARAMS, trainer_defaults

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
    from bench.data.datacard import dataset_card

    folder_argument(args.data, "--data")
    print(dataset_card(args.name, args.data, workspace_from(args).data_cache, args.label_seed))


def cmd_data_prepare(args: argparse.Namespace) -> None:
    from bench.data.datacard import size_check
    from bench.data.preparation import prepare
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
    from bench.execute.runner import Outcome, outcome_line, run_spec
    from bench.plan.grid import load_grid, refuse_unkeyed_features
    from bench.rundata import resolve_device
    from bench.spec import make_spec

    overrides = parse_assignments(args.set)
    dataset = args.dataset or load_grid(registry.PROJECT_ROOT / DEFAULT_GRID).datasets[0]
    spec = refuse_unkeyed_features(make_spec(
        dataset, args.method, args.seed, overrides=overrides, protocol=args.protocol, label_seed=args.label_seed,
        device=resolve_device(args.device), data_dir=folder_argument(args.data, "--data"), weights=args.weights))
    check_backbone_weights([spec])
    source = {"kind": "manual", "values": overrides} if overrides else {"kind": "defaults"}
    workspace = workspace_from(args)
    claims, tracker = open_stores(args, workspace)
    workspace.ensure_writable()
    outcome = run_spec(spec, workspace, hparam_source=source, claims=claims, tracker=tracker,
                       on_epoch=epoch_printer(spec.epochs) if sys.stderr.isatty() else None)
    if outcome.state == "elsewhere":
        print(outcome_line(spec, outcome))
        return
    record = outcome.record
    if record["status"] != "done":  # failed now, or recorded as failed before
        print(outcome_line(spec, Outcome("failed", record)))
        raise SystemExit(1)
    picks = ", ".join(f"{name} {choice['test_map']:.2f} (epoch {choice['epoch']})"
                      for name, choice in record["selections"].items())
    print(f"{spec.variant} on {spec.dataset} seed {spec.seed} ({outcome.state}, run {record['run_key']}): test mAP "
          f"by selection: {picks}")


def epoch_printer(epochs: int):
    """`run`'s progress on a terminal: one line per finished epoch on stderr."""
    def show(epoch: int, point: dict[str, float]) -> None:
        print(f"epoch {epoch}/{epochs}: train loss {point['train_loss']:.4f}, val mAP {point['val_map']:.2f}, test "
              f"mAP {point['test_map']:.2f}", file=sys.stderr, flush=True)

    return show


def tracker_from(args: argparse.Namespace, workspace: Workspace):
    """The MLflow tracker, or None with --no-tracking."""
    if args.no_tracking:
        return None
    from bench.execute.tracking import Tracker

    return Tracker(workspace.cache, workspace.tracking_uri())


def open_stores(args: argparse.Namespace, workspace: Workspace):
    """(claims, tracker): the stores a run writes to, opened remote ones first, so that a storage or tracking
    server that cannot be reached is an error before any local file is created."""
    from bench.execute.claims import ClaimStore

    claims = ClaimStore(workspace.claims_url()) if workspace.storage else None
    workspace.check_writable()
    tracker = tracker_from(args, workspace)
    return claims or ClaimStore(workspace.claims_url()), tracker


def grid_from(args: argparse.Namespace):
    """The grid of benchmark.toml (or --config) narrowed by the command-line options, validated."""
    from bench.plan.grid import load_grid

    overrides = parse_assignments(args.set)
    grid = load_grid(grid_file(args.config)).narrow(
        datasets=args.dataset, variants=args.variants, seeds=getattr(args, "seeds", None), overrides=overrides,
        data=folder_argument(args.data, "--data"), device=args.device, label_seed=args.label_seed,
        recipes=args.recipe, weights=args.weights)
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

    from bench.execute.workers import plan_workers
    from bench.rundata import resolve_device

    plan = plan_workers(args.jobs, args.threads, resolve_device(grid.device))
    torch.set_num_threads(plan.threads)
    return plan


def cmd_bench(args: argparse.Namespace) -> None:
    from bench.execute.runner import remove_failed, run_grid

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
    check_backbone_weights((spec for spec, _ in cells), imagenet_here=not (args.cluster or args.plan))
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
        from bench.execute.cluster import run_on_cluster

        counts = run_on_cluster(cells, workspace, args.cluster, resources, options, device=requested_device,
                                claims=claims, tracker=tracker)
    else:
        counts = run_grid(cells, workspace, plan=plan, claims=claims, tracker=tracker)
    lost = counts.get("lost", 0)
    print(f"bench: {counts['trained']} run(s) trained, {counts['failed']} failed, {counts['recorded']} already "
          f"recorded, {counts['elsewhere']} left to other workers" + (f", {lost} not trained (see above)"
                                                                      if lost else ""), flush=True)
    if not args.no_report:
        records = report(workspace, out, "md", force=False)
        figures(records, workspace, grid.datasets, redraw=bool(counts["trained"]))
    if lost:
        raise SystemExit(1)


def show_plan(args: argparse.Namespace, grid, cells, workspace: Workspace) -> None:
    """Print every cell with its settings' origins and whether it is recorded; train and write nothing."""
    from bench.execute.identity import run_key
    from bench.plan.show import print_plan
    from bench.records import record_path

    ledger = workspace.ledger()
    keys = [run_key(spec, workspace.data_cache, ledger) for spec, _ in cells]
    statuses = ["recorded" if record_path(workspace.results, key).exists() else "to train" for key in keys]
    print_plan(cells, statuses, grid)


def join_cluster(args: argparse.Namespace) -> dict[str, float] | None:
    """The resources of the Ray cluster of --cluster (joined now, before anything local is written), or None."""
    if not args.cluster:
        return None
    from bench.execute.cluster import connect

    return connect(args.cluster)


def task_options(args: argparse.Namespace, workspace: Workspace):
    """The Ray task options of --cluster (None without it); UserError for a cluster option given without it."""
    from bench.execute.cluster import TaskOptions

    if not args.cluster:
        given = [option for option, value in (("--gpus-per-cell", args.gpus_per_cell), ("--worker-cache",
                 args.worker_cache), ("--retries", args.retries)) if value is not None]
        if given:
            raise UserError(f"{given[0]} only applies with --cluster")
        return None
    cache = folder_or_new(args.worker_cache, "--worker-cache") if args.worker_cache else workspace.cache.resolve()
    return TaskOptions(threads=args.threads or 1, gpus=args.gpus_per_cell,
                       retries=DEFAULT_RETRIES if args.retries is None else args.retries, worker_cache=str(cache),
                       ledger=workspace.ledger())


def cmd_tune(args: argparse.Namespace) -> None:
    from bench.execute.tuning import check_storage, study_bases, tune_locally

    grid = grid_from(args)
    workspace = workspace_from(args)
    budget = grid.tuning.model_copy(update={name: value for name, value in (
        ("n_trials", args.n_trials), ("pruner", args.pruner), ("seed", args.seed),
        ("objective", args.val_variant)) if value is not None})
    options = task_options(args, workspace)
    plan = worker_plan(args, grid)
    spec_grid = grid.narrow(device="cpu") if args.cluster else grid  # on a cluster, its resources pick the device
    base_specs, budget = study_bases(spec_grid, args.recipe or ["tuned"], budget)
    check_backbone_weights(base_specs, imagenet_here=not (args.cluster or args.plan))
    if args.plan:
        from bench.plan.show import print_plan, space_text
        from bench.plan.studies import paper_settings, study_space

        print(f"tune: each study {budget.describe()}")
        statuses = [f"to tune: searches {space_text(study_space(spec, grid.overrides))}" for spec in base_specs]
        sources = [{"kind": spec.recipe, "values": paper_settings(spec)} for spec in base_specs]
        print_plan(list(zip(base_specs, sources, strict=True)), statuses, grid)
        return
    resources = join_cluster(args)
    if workspace.storage:
        check_storage(workspace.optuna_url())
    tracker = tracker_from(args, workspace)
    workspace.ensure_writable()
    print(f"tune: {len(base_specs)} stud{'y' if len(base_specs) == 1 else 'ies'}, each {budget.describe()}",
          flush=True)
    if args.cluster:
        from bench.execute.cluster import tune_on_cluster

        for summary in tune_on_cluster(grid, base_specs, workspace, resources, options, budget,
                                       heartbeat=args.heartbeat, tracker=tracker):
            print_tune_summary(summary)
    else:
        tune_locally(grid, base_specs, workspace, budget, plan, on_summary=print_tune_summary, tracker=tracker,
                     heartbeat=args.heartbeat)


def print_tune_summary(summary: dict[str, Any]) -> None:
    check = summary["convergence"]
    still = (f"; STILL IMPROVING: +{check['gain']:.2f} over the last third of the trials" if check["improving"]
             and check["gain"] is not None else "")
    print(f"tune {summary['study']}: best val mAP {summary['best_value']:.2f} ({summary['n_trials']} trials, "
          f"{summary['pruned']} pruned, {summary['epochs_trained']} epochs) with {summary['best_params']}{still}",
          flush=True)


def report(workspace: Workspace, out: Path, fmt: str, force: bool) -> list[dict[str, Any]]:
    """Write the leaderboard `out` from the records of the results folder; returns those records."""
    from bench.records import read_records
    from bench.report.leaderboard import write_report

    records = read_records(existing_results(workspace))
    written = write_report(records, out, workspace, fmt, force=force)
    print(f"report: {out} written from {len(records)} record(s)" + (f", and {len(written) - 1} table/figure file(s)"
                                                                    if len(written) > 1 else ""))
    return records


def existing_results(workspace: Workspace) -> Path:
    """The results folder that `report` and `figures` read; UserError when it does not exist."""
    if not workspace.results.is_dir():
        raise UserError(f"results folder {workspace.results} does not exist; run `pamlbench bench` first or give "
                        "--results")
    return workspace.results


def figures(records: list[dict[str, Any]], workspace: Workspace, datasets: list[str], redraw: bool) -> None:
    """Draw the checkpoint figures of `datasets` from `records`: all of them when `redraw`, else only those
    missing."""
    from bench.report.figures import checkpoint_figures
    from bench.report.frame import current_records

    records = current_records(records, workspace.ledger())
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
    from bench.report.figures import train_missing_weights

    workspace = workspace_from(args)
    for name in args.dataset or []:
        registry.dataset_class(name)
    records = read_records(existing_results(workspace))
    if not records:
        raise UserError(f"no run records in {workspace.results}: run `pamlbench bench` first or give --results")
    datasets = args.dataset or sorted({r["spec"]["dataset"] for r in records})
    if args.train:
        from bench.report.frame import current_records

        workspace.ensure_writable()
        for dataset in datasets:
            train_missing_weights(current_records(records, workspace.ledger()), dataset, workspace)
    figures(records, workspace, datasets, redraw=True)


def cmd_records_carry(args: argparse.Namespace) -> None:
    from bench.execute.carry import carry, describe_entry
    from bench.execute.workers import available_cores

    workspace = workspace_from(args)
    existing_results(workspace)
    entry = carry(workspace, check_all=args.all, jobs=args.jobs or available_cores())
    print(describe_entry(entry, workspace) if entry else
          f"records carry: every record in {quoted(workspace.results)} is current; nothing to carry")


HANDLERS = {"list": cmd_list, "data info": cmd_data_info, "data prepare": cmd_data_prepare, "run": cmd_run,
            "bench": cmd_bench, "tune": cmd_tune, "report": cmd_report, "figures": cmd_figures,
            "records carry": cmd_records_carry}
"""What each command does (its grammar is `bench.cli.parser`'s)."""


def refuse_nul(argv: list[str]) -> None:
    """UserError for an argument holding a NUL character, which no name, number or path can hold (the operating
    system refuses such a path outright)."""
    for argument in argv:
        if "\x00" in argument:
            raise UserError(f"argument {quoted(argument)} holds a NUL character; no name or path can")


def main(argv: list[str] | None = None) -> int:
    STOPPING["now"] = False
    ignore_late_signals()
    threads_before = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    previous = {signum: signal.signal(signum, stop_on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    interrupted = False
    try:
        refuse_nul(sys.argv[1:] if argv is None else argv)
        args = build_parser(HANDLERS).parse_args(argv)
        if getattr(args, "threads", None) is not None:
            import torch

            torch.set_num_threads(args.threads)
        args.handler(args)
    except UserError as error:
        print(f"pamlbench: error: {one_line(str(error))}", file=sys.stderr)
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
