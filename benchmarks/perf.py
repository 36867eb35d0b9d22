"""`make perf`: throughput and wall-time figures of the harness, printed as a table (a benchmark, not a test).

Every figure is the median of several repeats after a warm-up (harness and bare loop interleaved). Sections:
1. trainer vs bare loop (same model, same in-memory batches; forward + backward + Adam step and nothing else):
   small CNN on digits-mosaic, ResNet-50 at 224 px on CPU (a few batches);
2. input pipeline: JPEG folder (decode + resize 448 by DataLoader workers) vs the decoded uint8 cache, then flip and
   normalise, on a generated folder of JPEGs;
3. evaluation throughput;
   and the linear setting: the cost of extracting the pooled features once, and of a 25-epoch run reusing them;
4. workers: the machine's ceiling (the bare loop in one process using every core, and in one 1-thread process per
   core at once); then the same small grid (8 cells of 3 epochs) with `--jobs 1 --threads 2` and with the default
   workers (one 1-thread process per core), their throughput ratio, and the default grid's from-scratch wall time
   estimated from the default's per-epoch cost of a cell;
5. the default benchmark's cost per dataset: the training time recorded by the committed records (the sum of their
   train seconds), and (unless --quick) the from-scratch wall time of `pamlbench bench` per dataset, with peak RSS;
6. tuning: epochs trained by a fixed 20-trial search with and without pruning, and the best validation mAP of each
   (unless --quick);
7. cluster throughput (unless --quick, and where Ray and network namespaces are available): the same small
   embedded grid run with `bench --cluster` on a local Ray cluster of 1 worker node, then of 2 (1 CPU, 1 thread per
   cell each), as cells per minute and their ratio;
and on a CUDA machine ResNet-50 at 448 px, bf16 autocast + channels_last vs fp32.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def median_time(action, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        action()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def row(name: str, value: str, note: str = "") -> None:
    print(f"| {name:58s} | {value:>14s} | {note}", flush=True)


def bare_loop(trainer, batches: list[torch.Tensor], targets: list[torch.Tensor]):
    """Same model architecture and optimizer, batches already normalised in memory, nothing else."""
    from bench.model import CamClassifier, build_backbone

    torch.manual_seed(0)
    model = CamClassifier(build_backbone(trainer.spec.backbone, batches[0].shape[1]), targets[0].shape[1])
    model = model.to(trainer.device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)

    def epoch() -> None:
        for images, labels in zip(batches, targets, strict=True):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if trainer.cuda:
            torch.cuda.synchronize()

    return epoch


def epoch_batches(trainer) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """One epoch of the trainer's training images, normalised, in order, with their observed positives as targets."""
    images = trainer.data.train_images
    order = torch.arange(len(images))
    batches, targets = [], []
    for start in range(0, len(images), trainer.spec.batch_size):
        index = order[start:start + trainer.spec.batch_size]
        batches.append(trainer.model_input(images[index.to(images.device) if isinstance(images, torch.Tensor)
                                                else index].to(trainer.device)))
        targets.append((trainer.state.observed[index.to(trainer.device)] == 1).float())
    return batches, targets


def harness_vs_bare(trainer, label: str, repeats: int) -> None:
    images = trainer.data.train_images
    bare_epoch = bare_loop(trainer, *epoch_batches(trainer))
    timings = {"harness": [], "bare": []}
    for number in range(repeats + 1):  # interleaved, so that a machine's drift hits both alike; first is warm-up
        for name, action in (("harness", lambda: trainer.train_epoch(1)), ("bare", bare_epoch)):
            started = time.perf_counter()
            action()
            if number:
                timings[name].append(time.perf_counter() - started)
    harness, bare = statistics.median(timings["harness"]), statistics.median(timings["bare"])
    row(f"{label}: harness trainer, images/s", f"{len(images) / harness:.1f}")
    row(f"{label}: bare loop, images/s", f"{len(images) / bare:.1f}")
    row(f"{label}: harness / bare", f"{bare / harness:.3f}", "target >= 0.95")


def prepared_voc(workdir: Path, images: int, cache_size: int | None) -> Path:
    from fixtures import voc_tree

    from bench import registry
    from bench.data.preparation import prepare

    raw, out = workdir / "raw", workdir / f"voc-{cache_size}"
    if not raw.exists():
        voc_tree(raw, train=images, val=8)
        for path in (raw / "VOCdevkit" / "VOC2012" / "JPEGImages").glob("*.jpg"):  # VOC-sized photos
            rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
            base = rng.integers(0, 255, (47, 63, 3), dtype=np.uint8)
            from PIL import Image

            Image.fromarray(base).resize((500, 375), Image.BICUBIC).save(path, quality=90)
    if not out.exists():
        prepare(registry.load_dataset("voc"), raw, out, cache_size=cache_size, verify=False)
    return out


def input_pipeline(workdir: Path, repeats: int) -> None:
    from bench import registry

    folder = prepared_voc(workdir, 300, cache_size=448)
    results = {}
    for label, use_cache in (("JPEG folder, decode + resize 448, workers", False), ("decoded uint8 cache", True)):
        splits = registry.load_dataset("voc").load(folder, workdir)
        store = splits.train.images
        if not use_cache:
            store.cache = None
        mean = torch.tensor(splits.mean).view(1, -1, 1, 1) * 255
        std = torch.tensor(splits.std).view(1, -1, 1, 1) * 255

        def one_pass(store=store, mean=mean, std=std) -> None:
            for batch in store.batches(torch.randperm(len(store)), 16):
                flip = torch.rand(len(batch)) < 0.5
                normalised = (batch.float() - mean) / std
                torch.where(flip.view(-1, 1, 1, 1), normalised.flip(3), normalised)

        seconds = median_time(one_pass, repeats)
        results[use_cache] = len(store) / seconds
        row(f"input: {label}, images/s", f"{results[use_cache]:.1f}", f"{store.workers} workers" if not use_cache
            else "memory map")
    row("input: cache / JPEG", f"{results[True] / results[False]:.1f}", "target >= 5")


def resnet_trainer(workdir: Path, size: int, device: str, images: int):
    from bench.spec import make_spec
    from bench.trainer import Trainer

    folder = prepared_voc(workdir, images, cache_size=size)
    spec = make_spec("voc", "an", 0, overrides={"image_size": size, "batch_size": 8, "epochs": 1},
                     data_dir=str(folder), device=device, weights="none")
    return Trainer(spec, workdir, progress=False)


DEFAULT_GOALS = {"digits-mosaic": 15 * 60}
WHOLE_GOAL = 45 * 60


def linear_setting(workdir: Path) -> None:
    """The frozen-backbone setting: extracting the pooled features (ResNet-50 at 224 px on a generated VOC-format
    folder, and the small CNN on digits-mosaic), then a whole linear run that reuses them."""
    from bench import features
    from bench.spec import make_spec
    from bench.trainer import Trainer

    folder = prepared_voc(workdir, 48, cache_size=224)
    cases = (("ResNet-50 224 px, 48 VOC-format images", make_spec(
                 "voc", "an", 0, overrides={"image_size": 224, "epochs": 25, "freeze_backbone": True},
                 data_dir=str(folder), weights="none")),
             ("small CNN, digits-mosaic", make_spec("digits-mosaic", "an", 0,
                                                    overrides={"epochs": 25, "freeze_backbone": True})))
    for label, spec in cases:
        cache = workdir / f"linear-cache-{spec.dataset}"
        extractions = features.EXTRACTIONS["count"]
        started = time.perf_counter()
        Trainer(spec, cache, progress=False)
        row(f"linear: feature extraction + setup, {label}, s", f"{time.perf_counter() - started:.1f}",
            f"{features.EXTRACTIONS['count'] - extractions} extraction, once per cache")
        started = time.perf_counter()
        Trainer(spec, cache, progress=False).run()
        row(f"linear: a 25-epoch run on the cached features, {label}, s", f"{time.perf_counter() - started:.1f}",
            f"setup included; {features.EXTRACTIONS['count'] - extractions} extraction in all")


def recorded_cost(results: Path) -> None:
    """Training time per dataset summed over the current default-grid records in `results` (no training)."""
    from bench.records import read_records
    from bench.report.frame import records_frame

    frame = records_frame(read_records(results))
    frame = frame[frame.current & (frame.status == "done")]
    for dataset, runs in frame.groupby("dataset"):
        row(f"committed records, {dataset}: {len(runs)} runs, training s", f"{runs.train_seconds.sum():.0f}",
            f"mean {runs.train_seconds.mean():.1f} s per run")
    row("committed records, all datasets: training s", f"{frame.train_seconds.sum():.0f}")


def from_scratch(workdir: Path) -> None:
    """Wall time of the default `pamlbench bench` from an empty results folder, per dataset of benchmark.toml."""
    from bench.plan.grid import load_grid

    total = 0.0
    for dataset in load_grid(ROOT / "benchmark.toml").datasets:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench.cli", "bench", "--results", str(workdir / "results"), "--cache",
                        str(workdir / "bench-cache"), "--out", str(workdir / f"leaderboard-{dataset}.md"),
                        "--dataset", dataset, "--no-tracking", "--config", str(ROOT / "benchmark.toml")], check=True,
                       stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        total += seconds
        goal = DEFAULT_GOALS.get(dataset)
        row(f"from scratch: default bench on {dataset}, wall s", f"{seconds:.0f}",
            f"goal <= {goal}" if goal else "")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    row("from scratch: whole default bench, wall s", f"{total:.0f}", f"goal <= {WHOLE_GOAL}; peak RSS {peak:.0f} MiB")


def bare_throughput(threads: int, workdir: Path, repeats: int) -> None:
    """Print the bare loop's images/s (small CNN, digits-mosaic, `threads` torch threads in this process): the median
    of `repeats` epochs after one warm-up epoch. Run as a child process by `machine_ceiling`."""
    from bench.spec import make_spec
    from bench.trainer import Trainer

    torch.set_num_threads(threads)
    trainer = Trainer(make_spec("digits-mosaic", "an", 0), workdir / "cache", progress=False)
    batches, targets = epoch_batches(trainer)
    seconds = median_time(bare_loop(trainer, batches, targets), repeats)
    print(sum(len(batch) for batch in batches) / seconds, flush=True)


def machine_ceiling(workdir: Path, repeats: int) -> None:
    """What the default workers can gain on this machine without any harness: the bare loop's images/s in one
    process using every core, and summed over one 1-thread process per core running at the same time."""
    from bench.execute.workers import available_cores

    cores = available_cores()

    def start(threads: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, __file__, "--bare-throughput", str(threads), "--workdir",
                                 str(workdir), "--repeats", str(repeats)], stdout=subprocess.PIPE, text=True)

    single = float(start(cores).communicate()[0])
    together = [start(1) for _ in range(cores)]
    summed = sum(float(process.communicate()[0]) for process in together)
    row(f"bare loop: one process of {cores} threads, images/s", f"{single:.0f}")
    row(f"bare loop: {cores} processes of 1 thread at once, images/s summed", f"{summed:.0f}")
    row("bare loop: the machine's ceiling for the default workers' gain", f"{summed / single:.2f}",
        "the workers grid's ratio below cannot exceed it")


WORKERS_GRID = (["an", "ls", "role", "ll-r"], [0, 1], 3)
"""The small grid of the workers comparison: 4 variants x 2 seeds of 3 epochs on digits-mosaic (8 cells)."""


def grid_wall_time(workdir: Path, name: str, *options: str) -> tuple[float, list[dict]]:
    """Wall seconds of `pamlbench bench` on the workers grid with `options`, and its records."""
    from fixtures import write_grid

    from bench.records import read_records

    variants, seeds, epochs = WORKERS_GRID
    grid = write_grid(workdir / "workers-grid.toml", variants, seeds, epochs, dataset="digits-mosaic")
    results = workdir / f"workers-{name}"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "bench.cli", "bench", "--config", str(grid), "--results",
                           str(results), "--cache", str(workdir / "cache"), "--no-tracking", "--no-report", *options],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench {' '.join(options)} failed: {done.stderr.strip()[-2000:]}")
    return time.perf_counter() - started, read_records(results)


def workers(workdir: Path) -> None:
    """The same small grid in one 2-thread process and in the default workers (one 1-thread process per core); the
    ratio of their throughputs, and the default grid's from-scratch wall time estimated from the per-epoch cost of
    a cell under the default."""
    from bench.execute.workers import plan_workers
    from bench.plan.grid import load_grid
    from bench.spec import make_spec

    plan = plan_workers(None, None, "cpu")
    grid_wall_time(workdir, "warm-up", "--jobs", "1", "--seeds", "0", "--variants", "an")  # builds the dataset
    single, _ = grid_wall_time(workdir, "single", "--jobs", "1", "--threads", "2")
    pooled, records = grid_wall_time(workdir, "default")
    cells = len(WORKERS_GRID[0]) * len(WORKERS_GRID[1])
    row(f"workers grid ({cells} cells of {WORKERS_GRID[2]} epochs): --jobs 1 --threads 2, wall s", f"{single:.1f}",
        f"{60 * cells / single:.1f} cells/min")
    row(f"workers grid: default ({plan.jobs} x {plan.threads} thread), wall s", f"{pooled:.1f}",
        f"{60 * cells / pooled:.1f} cells/min")
    row("workers grid: throughput default / single process", f"{single / pooled:.2f}", "goal >= 1.6")
    per_epoch = statistics.median(r["train_seconds"] / len(r["curve"]) for r in records)
    total = 0.0
    grid = load_grid(ROOT / "benchmark.toml")
    for dataset in grid.datasets:
        epochs = make_spec(dataset, "an", 0).epochs
        seconds = len(grid.variants) * len(grid.seeds) * epochs * per_epoch / plan.jobs
        total += seconds
        row(f"estimated from scratch, default bench on {dataset}, min", f"{seconds / 60:.0f}",
            f"{len(grid.variants) * len(grid.seeds)} cells x {epochs} epochs x {per_epoch:.2f} s / {plan.jobs}")
    row("estimated from scratch, whole default bench, min", f"{total / 60:.0f}", "goal <= 60")


def tuning(workdir: Path) -> None:
    from bench.execute.tuning import tune
    from bench.execute.workspace import Workspace
    from bench.plan.grid import Grid, TuningBudget

    grid = Grid(["digits-mosaic"], ["ls"], [0], device="cpu", overrides={"epochs": 5})
    base = grid.base_spec("digits-mosaic", "ls", 100)
    figures = {}
    for pruner in ("none", "median"):
        workspace = Workspace(results=workdir / f"tuned-{pruner}", cache=workdir / "cache",
                              storage=f"sqlite:///{workdir / f'{pruner}.db'}")
        budget = TuningBudget(n_trials=20, pruner=pruner, seed=100)
        summary = tune(grid, base, workspace, budget, progress=False)
        figures[pruner] = summary
        row(f"tuning ls, 20 trials of 5 epochs, pruner {pruner}: epochs trained", str(summary["epochs_trained"]),
            f"best val mAP {summary['best_value']:.2f}")
    saved = 1 - figures["median"]["epochs_trained"] / figures["none"]["epochs_trained"]
    row("tuning: epochs saved by pruning", f"{100 * saved:.0f} %", "target >= 40 %; best val mAP within 0.5: "
        f"{abs(figures['median']['best_value'] - figures['none']['best_value']):.2f}")


def cluster_throughput(workdir: Path) -> None:
    """Cells per minute of one small digits-mosaic grid on a local Ray cluster of 1, then 2 nodes (1 CPU each)."""
    from bench import registry
    from bench.execute.localcluster import RayCluster, namespace_available

    reason = namespace_available()
    if reason:
        row("cluster: 2 nodes / 1 node throughput", "skipped", reason)
        return
    registry.load_dataset("digits-mosaic").load(None, workdir / "cache" / "data")  # built once, before timing
    grid = workdir / "cluster-grid.toml"
    grid.write_text("datasets = ['digits-mosaic']\nvariants = ['an', 'll-r', 'em', 'full']\nseeds = [0, 1]\n"
                    "device = 'cpu'\n[overrides]\nepochs = 3\n")
    rates = {}
    cluster = RayCluster(nodes=1, cpus=1)
    try:
        for nodes in (1, 2):
            if nodes == 2:
                cluster.add_node()
            started = time.perf_counter()
            driver = cluster.pamlbench("bench", "--config", str(grid), "--results", str(workdir / f"ray-{nodes}"),
                                       "--cache", str(workdir / "cache"), "--cluster", cluster.address, "--threads",
                                       "1", "--no-tracking", "--no-report", cwd=workdir)
            out, err = driver.communicate()
            if driver.returncode != 0:
                raise RuntimeError(f"bench --cluster failed: {err.strip()[-500:]}")
            rates[nodes] = 8 / (time.perf_counter() - started) * 60
            row(f"cluster, {nodes} node(s): 8 digits cells of 3 epochs, cells/min", f"{rates[nodes]:.2f}",
                "driver start and Ray workers' imports included")
    finally:
        cluster.stop()
    row("cluster: 2 nodes / 1 node throughput", f"{rates[2] / rates[1]:.2f}", "ideal 2.0")


def gpu_precision(workdir: Path, repeats: int) -> None:
    trainer = resnet_trainer(workdir, 448, "cuda", 64)
    for label, bf16 in (("bf16 autocast + channels_last", True), ("fp32", False)):
        trainer.cuda = bf16  # autocast is on exactly when this flag is
        seconds = median_time(lambda: (trainer.train_epoch(1), torch.cuda.synchronize()), repeats)
        row(f"GPU ResNet-50 448 px, {label}, images/s", f"{len(trainer.data.train_images) / seconds:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the from-scratch benchmark and the tuning "
                                                             "comparison")
    parser.add_argument("--no-full-bench", action="store_true", help="skip the from-scratch benchmark (about as long "
                                                                      "as a first `make bench`)")
    parser.add_argument("--cluster-only", action="store_true", help="only the cluster throughput (section 6)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--bare-throughput", type=int, metavar="THREADS", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_throughput:
        bare_throughput(args.bare_throughput, args.workdir, args.repeats)
        return
    from bench.spec import make_spec
    from bench.trainer import Trainer

    workdir = Path(tempfile.mkdtemp(prefix="pamlbench-perf-"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads, "
          f"{torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}")
    print(f"| {'figure':58s} | {'value':>14s} | note\n|{'-' * 60}|{'-' * 16}|------")
    if args.cluster_only:
        cluster_throughput(workdir)
        return
    digits = Trainer(make_spec("digits-mosaic", "an", 0), workdir / "cache", progress=False)
    threads = torch.get_num_threads()
    for count in sorted({1, threads}):
        torch.set_num_threads(count)
        harness_vs_bare(digits, f"small CNN, digits-mosaic 56 px, {count} thread{'s' * (count > 1)}", args.repeats)
    torch.set_num_threads(threads)
    evaluation = median_time(lambda: digits.predict(digits.data.val_clean.images), args.repeats)
    row("evaluation, small CNN, images/s", f"{len(digits.data.val_clean.images) / evaluation:.0f}")
    harness_vs_bare(resnet_trainer(workdir, 224, "cpu", 16), "ResNet-50 224 px, CPU", args.repeats)
    input_pipeline(workdir, args.repeats)
    started = time.perf_counter()
    Trainer(make_spec("digits-mosaic", "an", 0), workdir / "cache", progress=False).run()
    row(f"one digits-mosaic run (an, {make_spec('digits-mosaic', 'an', 0).epochs} epochs), wall s",
        f"{time.perf_counter() - started:.1f}")
    linear_setting(workdir)
    recorded_cost(ROOT / "results")
    machine_ceiling(workdir, args.repeats)
    workers(workdir)
    if not (args.quick or args.no_full_bench):
        from_scratch(workdir)
    if not args.quick:
        tuning(workdir)
        cluster_throughput(workdir)
    if torch.cuda.is_available():
        gpu_precision(workdir, args.repeats)


if __name__ == "__main__":
    main()
