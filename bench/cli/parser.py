"""The `pamlbench` command-line grammar: every command, its options and their checks (`bench.cli.arguments`); what the
commands do is `bench.cli.main`'s."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from bench.cli.arguments import (
    SEED,
    OneLineParser,
    cluster_address,
    gpu_share,
    integer,
    positive_seconds,
    weights_argument,
)
from bench.execute.claims import HEARTBEAT_SECONDS
from bench.execute.cluster import DEFAULT_RETRIES, EMBEDDED_GPU_SHARE
from bench.execute.workspace import DEFAULT_CACHE, DEFAULT_RESULTS
from bench.observation import COLE_SEED
from bench.plan.recipes import RECIPES

DESCRIPTION = ("The `pamlbench` command line: list, data info, data prepare, run, bench, tune, report, figures, "
               "records carry.")
DEFAULT_LEADERBOARD = Path("leaderboard.md")
DEFAULT_GRID = Path("benchmark.toml")
FORMAT_SUFFIX = {"md": "md", "csv": "csv", "latex": "tex"}
WEIGHTS_HELP = ("backbone weights: 'imagenet' (torch cache, the real datasets' default), 'none' (random "
                "initialisation) or a local state-dict file")


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
    parser.add_argument("--weights", type=weights_argument, help=WEIGHTS_HELP)
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


Handlers = dict[str, Callable[[argparse.Namespace], None]]
"""Command name ('run', 'data info', ...) -> the function that carries it out."""


def build_parser(handlers: Handlers) -> argparse.ArgumentParser:
    """The `pamlbench` parser; each command's `handler` default is `handlers[its name]` ('data info', ...)."""
    parser = OneLineParser(prog="pamlbench", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for add_command in (add_list, add_data, add_run, add_bench, add_tune, add_report, add_figures, add_records):
        add_command(commands, handlers)
    return parser


def add_list(commands: argparse._SubParsersAction, handlers: Handlers) -> None:
    """`list`: the registered methods or datasets."""
    listing = commands.add_parser("list", help="list registered methods or datasets")
    listing.add_argument("kind", choices=["methods", "datasets"])
    listing.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern, e.g. 'll-*'")
    listing.add_argument("--dataset", help="show the defaults and tuning ranges on this dataset")
    listing.set_defaults(handler=handlers["list"])


def add_data(commands: argparse._SubParsersAction, handlers: Handlers) -> None:
    """`data info` and `data prepare`."""
    data = commands.add_parser("data", help="dataset commands").add_subparsers(dest="data_command", required=True,
                                                                              parser_class=OneLineParser)
    info = data.add_parser("info", help="print a dataset's card",
                           parents=[storage_options(results=False, threads=False, storage=False)])
    info.add_argument("name")
    info.add_argument("--data", help="prepared dataset folder (for datasets that need one)")
    info.add_argument("--label-seed", type=SEED, default=COLE_SEED, help=f"label draw to describe ({COLE_SEED})")
    info.set_defaults(handler=handlers["data info"])
    prep = data.add_parser("prepare", help="prepare a real dataset from its official files")
    prep.add_argument("name", help="a dataset that needs preparation (`pamlbench list datasets`)")
    prep.add_argument("--raw", required=True, help="folder with the unpacked official download")
    prep.add_argument("--out", required=True, help="new folder for the prepared dataset (must not exist)")
    prep.add_argument("--image-cache", action="store_true",
                      help="also write a decoded uint8 image cache (fast training; 3 x size^2 bytes per image)")
    prep.add_argument("--size", type=integer("--size", 1, 4097), default=448,
                      help="image side of the cache (default 448)")
    prep.add_argument("--no-verify", action="store_true", help="skip decoding every image once (faster)")
    prep.set_defaults(handler=handlers["data prepare"])


def add_run(commands: argparse._SubParsersAction, handlers: Handlers) -> None:
    """`run`: one run."""
    run = commands.add_parser("run", help="train one run (skipped if already recorded)", parents=[storage_options()])
    run.add_argument("--dataset", help="default: the first dataset of the project's benchmark.toml")
    run.add_argument("--method", required=True,
                     help="variant: a method name, optionally +boostlu, +boostlu-train, +boostlu-infer or +li "
                          "(LinearInit); `pamlbench list methods` lists them")
    run.add_argument("--seed", type=SEED, default=0, help="training seed (default 0)")
    run.add_argument("--protocol", default="single-positive", help="single-positive, partial-<fraction>, annotated")
    run.add_argument("--label-seed", type=SEED, default=COLE_SEED,
                     help=f"seed of the observed-label draw (default {COLE_SEED})")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    run.add_argument("--weights", type=weights_argument, help=WEIGHTS_HELP)
    run.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                     help="hyperparameter override (the trainer's or the method's own), repeatable")
    run.add_argument("--data", help="prepared dataset folder (for datasets that need one)")
    run.add_argument("--no-tracking", action="store_true", help="do not log the run to MLflow")
    run.set_defaults(handler=handlers["run"])


def add_bench(commands: argparse._SubParsersAction, handlers: Handlers) -> None:
    """`bench`: the grid, then the leaderboard."""
    bench = commands.add_parser("bench", help="run the benchmark grid, then write the leaderboard",
                                parents=[storage_options()])
    add_grid_options(bench)
    bench.add_argument("--out", default=str(DEFAULT_LEADERBOARD), help="leaderboard file (default: leaderboard.md)")
    bench.add_argument("--no-report", action="store_true", help="do not write the leaderboard")
    bench.add_argument("--retry-failed", action="store_true", help="train runs recorded as failed again")
    bench.set_defaults(handler=handlers["bench"])


def add_tune(commands: argparse._SubParsersAction, handlers: Handlers) -> None:
    """`tune`: the Optuna studies of the grid."""
    tune_cmd = commands.add_parser("tune", help="tune hyperparameters with Optuna (one study per variant)",
                                   parents=[storage_options()])
    add_grid_options(tune_cmd, seeds=False)
    tune_cmd.add_argument("--n-trials", type=integer("--n-trials", 1),
                          help="trials per study, counted as the grid file's [tuning] budget counts them (default: "
                               "its n_trials)")
    tune_cmd.add_argument("--pruner", choices=["median", "hyperband", "none"],
                          help="default: the grid file's [tuning] budget")
    tune_cmd.add_argument("--seed", type=SEED,
                          help="training seed of every trial and the TPE seed (default: the grid file's [tuning] "
                               "budget, 100, outside the benchmark's seeds)")
    tune_cmd.add_argument("--objective", "--val-variant", dest="val_variant", choices=["clean", "observed"],
                          help="validation labels the trials are scored on (default: the grid file's [tuning] "
                               "objective, clean)")
    tune_cmd.add_argument("--heartbeat", type=positive_seconds, default=HEARTBEAT_SECONDS,
                          help="trial heartbeat in seconds; a trial silent for 3 beats is failed and retried")
    tune_cmd.set_defaults(handler=handlers["tune"])


def add_report(commands: argparse._SubParsersAction, handlers: Handlers) -> None:
    """`report`: the leaderboard from the records."""
    report_cmd = commands.add_parser("report", help="write the leaderboard from the run records",
                                     parents=[storage_options(cache=False, threads=False, storage=False)])
    report_cmd.add_argument("--format", choices=list(FORMAT_SUFFIX), default="md",
                            help="md: leaderboard with details, per-class AP CSVs and curves; csv/latex: tables only")
    report_cmd.add_argument("--out", help="output file (default: leaderboard.md / .csv / .tex)")
    report_cmd.add_argument("--force", action="store_true",
                            help="replace an existing leaderboard even with one built from no records")
    report_cmd.set_defaults(handler=handlers["report"])


def add_figures(commands: argparse._SubParsersAction, handlers: Handlers) -> None:
    """`figures`: the checkpoint figures."""
    figures_cmd = commands.add_parser("figures", help="draw the CAM figures from the best-epoch checkpoints",
                                      parents=[storage_options(storage=False)])
    figures_cmd.add_argument("--train", action="store_true",
                             help="first train again the cells whose best-epoch weights are missing (the same run "
                                  "key gives the same weights), into a scratch results folder; records are untouched")
    figures_cmd.add_argument("--dataset", action="append", default=None,
                             help="datasets (default: every dataset with records)")
    figures_cmd.set_defaults(handler=handlers["figures"])


def add_records(commands: argparse._SubParsersAction, handlers: Handlers) -> None:
    """`records carry`."""
    records = commands.add_parser("records", help="run record commands").add_subparsers(
        dest="records_command", required=True, parser_class=OneLineParser)
    carry = records.add_parser(
        "carry", help="keep the records across a code change that changes no number: re-train a sample of the "
                      "stale records, compare every number bit for bit, and on agreement carry them in the ledger",
        parents=[storage_options(threads=False, storage=False)])
    carry.add_argument("--all", action="store_true", help="re-train every stale record, not a sample")
    carry.add_argument("--jobs", type=integer("--jobs", 1, 1025),
                       help="worker processes re-training cells at once (default: one per core)")
    carry.set_defaults(handler=handlers["records carry"])
