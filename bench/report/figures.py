"""Figures linked from the leaderboard (matplotlib PNGs under results/figures/).

From the records alone (`record_figures`, drawn by every report):
- validation curves: validation mAP (clean labels) per epoch, mean over seeds with its 95 % confidence band, one
  small panel per method of the papers' figures (`bench/plan/papers.toml`), without (solid) and with BoostLU (dashed);
- memorisation: per epoch, the share of the training set's false negatives (truly positive, not observed) that the
  model scores below 0.5 during the training pass (`bench.trainer.Trainer.train_epoch`), as in Kim et al.'s Large
  Loss Matters (CVPR 2022), Figure 1: assume negative vs its large-loss fix vs the full-label oracle.
From the best-epoch checkpoints (`checkpoint_figures`, drawn by `make bench` and `pamlbench figures`):
- the explanation analysis of Kim et al. (CVPR 2023, BoostLU): for test images, the distribution of the
  class-activation-map attribution on true positive classes (the largest CAM cell of the class) for a full-label
  model, an AN model, and the same AN model with BoostLU at inference;
- a grid of test images with the CAMs of one positive class each, without and with BoostLU.
Checkpoints are not committed: on a clone, `train_missing_weights` (`pamlbench figures --train`) trains the picked
cells again when this machine reproduces their run keys.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from bench import checkpoints  # noqa: E402
from bench.errors import UserError  # noqa: E402
from bench.execute.identity import run_key  # noqa: E402
from bench.execute.ledger import ledger_path  # noqa: E402
from bench.execute.workspace import Workspace  # noqa: E402
from bench.model import boostlu, build_model  # noqa: E402
from bench.plan.papers import papers  # noqa: E402
from bench.plan.recipes import RECIPES  # noqa: E402
from bench.records import atomic_write  # noqa: E402
from bench.report import stats  # noqa: E402
from bench.report.frame import file_slug, recipes_present  # noqa: E402
from bench.rundata import load_splits, normalise  # noqa: E402
from bench.spec import TRAINING_HPARAMS, RunSpec  # noqa: E402

FIGURE_GROUPS = ["protocol", "label_seed", "backbone", "training", "epochs", "numerics"]
"""What separates two figures of one dataset: a leaderboard setting (`bench.report.frame.SETTING_COLUMNS`) and, unlike
the tables, also the number of epochs (curves of different lengths are never drawn in one panel)."""


def picks() -> dict[str, Any]:

    return papers()["figures"]


def save(figure: plt.Figure, path: Path) -> Path:
    """Render `figure` as PNG and write it to `path` atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    atomic_write(path, buffer.getvalue())
    return path


def curves(by_key: dict[str, dict[str, Any]], keys: list[str], field: str) -> np.ndarray:
    """seeds x epochs array of `field` from the curves of the records `keys`."""
    return np.array([[point[field] for point in by_key[key]["curve"]] for key in keys], dtype=float)


def band(axis, values: np.ndarray, **style) -> None:
    """Mean over rows per column, with the 95 % confidence band of the mean where there are 2 rows or more."""
    epochs = np.arange(1, values.shape[1] + 1)
    centre = values.mean(0)
    axis.plot(epochs, centre, **style)
    if len(values) > 1:
        half = np.array([stats.half_width(list(column)) for column in values.T])
        axis.fill_between(epochs, centre - half, centre + half, color=style.get("color"), alpha=0.15, linewidth=0)


def record_figures(frame: pd.DataFrame, records: list[dict[str, Any]], out_dir: Path) -> list[tuple[Path, str]]:
    """Draw the records-only figures of every (dataset, FIGURE_GROUPS values) with finished current runs of the
    dataset's first recipe (tuned before paper before defaults, as the leaderboard); returns [(path, caption)]."""
    if frame.empty:
        return []
    done = frame[(frame.status == "done") & frame.current & (frame.variant == frame.variant.str.split(" ").str[0])]
    primary = {dataset: recipes_present(runs)[0] for dataset, runs in done.groupby("dataset")}
    done = done[done.recipe == done.dataset.map(primary)]
    by_key = {r["run_key"]: r for r in records}
    chosen = picks()
    written = []
    for (dataset, *group_values), runs in done.groupby(["dataset", *FIGURE_GROUPS]):
        slug = file_slug(dataset, *group_values)
        keys = {variant: list(group.sort_values("seed").run_key) for variant, group in runs.groupby("variant")}
        methods = [m for m in chosen["curve_methods"] if m in keys or f"{m}+boostlu" in keys]
        if methods:
            path = validation_curves(by_key, keys, methods, dataset, out_dir / f"val_curves_{slug}.png")
            written.append((path, f"{dataset}: validation mAP per epoch, without and with BoostLU "
                                  f"(mean over seeds, 95 % band)"))
        variants = [v for v in chosen["memorisation_variants"] if v in keys]
        if variants:
            path = memorisation(by_key, keys, variants, dataset, out_dir / f"memorisation_{slug}.png")
            written.append((path, f"{dataset}: memorisation of false negatives per epoch"))
    return written


def validation_curves(by_key, keys: dict[str, list[str]], methods: list[str], dataset: str, path: Path) -> Path:
    columns = min(3, len(methods))
    rows = -(-len(methods) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False, sharey=True,
                                layout="constrained")
    for axis, method in zip(axes.flat, methods, strict=False):
        for variant, colour, dash in ((method, "tab:blue", "-"), (f"{method}+boostlu", "tab:red", "--")):
            if variant in keys:
                band(axis, curves(by_key, keys[variant], "val_map"), color=colour, linestyle=dash, label=variant)
        axis.set(title=method, xlabel="epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    for axis in axes[:, 0]:
        axis.set_ylabel("validation mAP (%)")
    for axis in list(axes.flat)[len(methods):]:
        axis.axis("off")
    figure.suptitle(f"{dataset}: validation mAP (clean labels) per epoch, mean over seeds and 95 % band")
    return save(figure, path)


def memorisation(by_key, keys: dict[str, list[str]], variants: list[str], dataset: str, path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    for variant, colour in zip(variants, plt.cm.tab10.colors, strict=False):
        band(axis, 100 * curves(by_key, keys[variant], "fn_memorised"), color=colour, label=variant)
    axis.set(title=f"{dataset}: false negatives the model fits as negatives (training pass)", xlabel="epoch",
             ylabel="false negatives scored below 0.5 (%)")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend()
    return save(figure, path)


def pick(records: list[dict[str, Any]], dataset: str, variant: str) -> dict[str, Any] | None:
    """The finished record of `variant` on `dataset` with the smallest seed, of the first recipe that has one (tuned
    before paper before defaults), among `records`, the current-code records (`bench.report.frame.current_records`);
    hand-set and frozen-backbone runs (whose checkpoints hold the head alone) are never picked."""
    found = [r for r in records if r["status"] == "done" and r["variant"] == variant
             and r["spec"]["dataset"] == dataset and r.get("hparam_source", {}).get("kind") != "manual"
             and not r["spec"].get("freeze_backbone")]
    for recipe in RECIPES:
        chosen = [r for r in found if r["spec"].get("recipe", "defaults") == recipe]
        if chosen:
            return min(chosen, key=lambda r: (r["spec"]["seed"], r["run_key"]))
    return None


def picked_records(records: list[dict[str, Any]], dataset: str) -> list[dict[str, Any]]:
    """The records whose best-epoch weights the checkpoint figures of `dataset` read."""
    chosen = picks()
    variants = [chosen["attribution"]["oracle"], chosen["attribution"]["plain"], *chosen["cam_examples"]]
    return [record for record in (pick(records, dataset, variant) for variant in variants) if record is not None]


def train_missing_weights(records: list[dict[str, Any]], dataset: str, workspace: Workspace) -> None:
    """Train again, into a scratch results folder, each cell the checkpoint figures of `dataset` read whose best-epoch
    weights are missing here, at the record's thread count. Only a cell whose run key this machine reproduces (the
    same code, data and numerics) is trained: its weights are then the recorded run's."""
    from bench.execute.runner import run_spec

    for record in picked_records(records, dataset):
        if checkpoints.best_file(workspace.checkpoints, record["run_key"]).exists():
            continue
        spec = RunSpec.from_dict(record["spec"])
        torch.set_num_threads(record.get("numerics", {}).get("threads") or torch.get_num_threads())
        key = run_key(spec, workspace.data_cache, workspace.ledger())
        if key != record["run_key"]:
            print(f"figures: cannot train {spec.variant} seed {spec.seed} on {dataset} again here: this code, data "
                  f"or numerics give the run key {key}, not the record's {record['run_key']}")
            continue
        print(f"figures: training {spec.variant} seed {spec.seed} on {dataset} again for its best-epoch weights",
              flush=True)
        with tempfile.TemporaryDirectory(prefix="pamlbench-redraw-") as scratch:
            if ledger_path(workspace.results).exists():  # the scratch folder keys the cell as the records do
                shutil.copyfile(ledger_path(workspace.results), ledger_path(Path(scratch)))
            run_spec(spec, Workspace(results=Path(scratch), cache=workspace.cache),
                     hparam_source=record.get("hparam_source"))


def checkpoint_figure_names(records: list[dict[str, Any]], dataset: str) -> list[tuple[str, str]]:
    """[(file name, caption)] of the checkpoint figures whose records exist for `dataset`."""
    chosen = picks()
    names = []
    attribution = chosen["attribution"]
    if pick(records, dataset, attribution["oracle"]) and pick(records, dataset, attribution["plain"]):
        oracle, plain = attribution["oracle"], attribution["plain"]
        names.append((f"cam_attribution_{dataset}.png", f"{dataset}: CAM attribution on true positive classes: "
                      f"{oracle}, {plain}, {plain} + BoostLU at inference"))
    plain, boosted = chosen["cam_examples"]
    if pick(records, dataset, plain) and pick(records, dataset, boosted):
        names.append((f"cam_examples_{dataset}.png", f"{dataset}: CAMs of positive classes, {plain} vs {boosted}"))
    return names


class LoadedModel:
    """A best-epoch model (eval mode, CPU) with the test images and labels of its dataset."""

    def __init__(self, record: dict[str, Any], workspace: Workspace) -> None:
        spec = RunSpec.from_dict({**record["spec"], "device": "cpu"})
        splits = load_splits(spec.dataset, spec.data_dir, str(workspace.data_cache), spec.image_size)
        self.model = build_model(spec, splits.test.images.shape[1], len(splits.class_names))
        path = checkpoints.best_file(workspace.checkpoints, record["run_key"])
        if not path.exists():
            raise UserError(
                f"the best-epoch weights of {spec.variant} seed {spec.seed} on {spec.dataset} ({path}) are not here: "
                "checkpoints stay on the machine that trained a cell and are not committed, so the committed figures "
                "stand; to redraw them, `pamlbench figures --train` trains those cells again first (the same code and "
                "numerics give the same run key and weights; the records are not touched)")
        self.model.load_state_dict(checkpoints.load_model_weights(path))
        self.model.eval()
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(splits.mean).view(shape) * 255
        self.std = torch.tensor(splits.std).view(shape) * 255
        self.test_images, self.test_labels, self.class_names = splits.test.images, splits.test.labels, \
            splits.class_names

    def cams(self, images: torch.Tensor, alpha: float | None = None) -> torch.Tensor:
        """Class activation maps of `images`, boosted by BoostLU(alpha) when given."""
        with torch.inference_mode():
            maps = self.model.class_activation_maps(normalise(images, self.mean, self.std))
        return boostlu(maps, alpha) if alpha is not None else maps


def positive_class_attribution(loaded: LoadedModel, num_images: int, alpha: float | None) -> np.ndarray:
    """Largest CAM cell of every (test image, true positive class) of the first `num_images` test images,
    optionally boosted by BoostLU(alpha)."""
    peak = loaded.cams(loaded.test_images[:num_images], alpha).flatten(2).amax(2).numpy()
    return peak[loaded.test_labels[:num_images] == 1]


def checkpoint_figures(records: list[dict[str, Any]], dataset: str, workspace: Workspace, *,
                       only_missing: bool = False, num_images: int = 500) -> list[Path]:
    """Draw the checkpoint figures of `dataset` whose records exist (`checkpoint_figure_names`); with
    `only_missing`, only those whose file is absent. Returns the paths written."""
    chosen = picks()
    written = []
    for name, _ in checkpoint_figure_names(records, dataset):
        path = workspace.figures / name
        if only_missing and path.exists():
            continue
        if name.startswith("cam_attribution"):
            written.append(attribution_figure(records, dataset, chosen["attribution"], workspace, path, num_images))
        else:
            plain, boosted = (pick(records, dataset, variant) for variant in chosen["cam_examples"])
            written.append(cam_grid(plain, boosted, workspace, path))
    return written


def attribution_figure(records, dataset: str, attribution: dict[str, str], workspace: Workspace, path: Path,
                       num_images: int) -> Path:
    oracle = LoadedModel(pick(records, dataset, attribution["oracle"]), workspace)
    plain = LoadedModel(pick(records, dataset, attribution["plain"]), workspace)
    alpha = TRAINING_HPARAMS["boost_alpha"].default
    series = {attribution["oracle"]: positive_class_attribution(oracle, num_images, None),
              attribution["plain"]: positive_class_attribution(plain, num_images, None),
              f"{attribution['plain']} + BoostLU at inference (alpha {alpha:g})":
                  positive_class_attribution(plain, num_images, alpha)}
    figure, axis = plt.subplots(figsize=(7, 4.5))
    bins = np.linspace(min(v.min() for v in series.values()), max(v.max() for v in series.values()), 60)
    for name, values in series.items():
        axis.hist(values, bins=bins, alpha=0.45, label=f"{name} (median {np.median(values):.1f})")
    axis.set(title=f"{dataset}: largest CAM cell of true positive classes ({num_images} test images)",
             xlabel="attribution score (CAM logit)", ylabel="count")
    axis.legend()
    return save(figure, path)


def cam_grid(plain: dict[str, Any], boosted: dict[str, Any], workspace: Workspace, path: Path, rows: int = 4) -> Path:
    """Test images with the CAM of one positive class each, for a model without and with BoostLU."""
    models = [(plain["variant"], LoadedModel(plain, workspace)), (boosted["variant"], LoadedModel(boosted, workspace))]
    first = models[0][1]
    figure, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows))
    for row in range(rows):
        image = first.test_images[row:row + 1]
        cls = int(np.flatnonzero(first.test_labels[row])[0])
        axes[row, 0].imshow(image[0].permute(1, 2, 0).squeeze().numpy(), cmap="gray")
        axes[row, 0].set_title(f"class {first.class_names[cls]}", fontsize=9)
        for column, (name, loaded) in enumerate(models, 1):
            model = loaded.model
            cam = loaded.cams(image, model.boost_alpha if model.boostlu_infer else None)[0, cls].numpy()
            axes[row, column].imshow(image[0].permute(1, 2, 0).squeeze().numpy(), cmap="gray")
            extent = (0, image.shape[-1], image.shape[-2], 0)
            shown = axes[row, column].imshow(cam, cmap="jet", alpha=0.5, extent=extent)
            axes[row, column].set_title(f"{name} (max {cam.max():.1f})", fontsize=9)
            figure.colorbar(shown, ax=axes[row, column], fraction=0.046)
    for axis in axes.flat:
        axis.axis("off")
    return save(figure, path)
