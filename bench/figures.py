"""Figures linked from the leaderboard (matplotlib PNGs under results/figures/).

- `validation_curves`: validation mAP per epoch for each variant, mean over seeds (from the records alone).
- `cam_figures`: the explanation analysis of Kim et al. (CVPR 2023): for test images, the distribution of the
  class-activation-map attribution on true positive classes — the largest CAM cell of the class — for a full-label
  model, an AN model, and the same AN model with BoostLU at inference; and a grid of test images with the CAMs of
  their positive classes without and with BoostLU. These need the best-epoch checkpoints that training writes to
  the cache folder (`.pamlbench/checkpoints`), so `make bench` draws them after the runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from bench.errors import UserError  # noqa: E402
from bench.model import boostlu  # noqa: E402


def save(figure: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(partial, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    partial.replace(path)
    return path


def validation_curves(frame: pd.DataFrame, records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One panel per (dataset, setting): validation mAP per epoch, mean over seeds, one line per variant (one colour
    per method, dashed with BoostLU)."""
    by_key = {r["run_key"]: r for r in records}
    if frame.empty:
        return []
    done = frame[(frame.status == "done") & frame.current]
    panels = list(done.groupby(["dataset", "protocol", "val_variant", "backbone", "epochs"]))
    if not panels:
        return []
    figure, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 5.5), squeeze=False)
    families = sorted({variant.split("+")[0] for variant in done.variant})
    colours = {family: plt.cm.tab20(i % 20) for i, family in enumerate(families)}
    for axis, (key, runs) in zip(axes[0], panels, strict=True):
        for variant, group in sorted(runs.groupby("variant")):
            curves = pd.DataFrame([[point["val_map"] for point in by_key[k]["curve"]] for k in group.run_key])
            epochs = np.arange(1, curves.shape[1] + 1)
            axis.plot(epochs, curves.mean(), marker="o", markersize=3, label=variant,
                      color=colours[variant.split("+")[0]], linestyle="--" if "boostlu" in variant else "-")
        axis.set(title=" / ".join(map(str, key[:3])), xlabel="epoch", ylabel="validation mAP (%)",
                 xticks=epochs)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, ncol=2)
    return [save(figure, out_dir / "val_map_curves.png")]


def load_model(record: dict[str, Any], checkpoints: Path, data_cache: Path):
    """The best-epoch model of `record` (eval mode) and the trainer that built it, from its checkpoint."""
    from bench.spec import RunSpec
    from bench.trainer import Trainer

    path = checkpoints / f"{record['run_key']}.pt"
    if not path.exists():
        raise UserError(f"checkpoint {path} is missing: run `make bench` to train and keep it")
    spec = RunSpec.from_dict({**record["spec"], "device": "cpu"})
    trainer = Trainer(spec, data_cache, progress=False)
    trainer.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
    trainer.model.eval()
    return trainer


def positive_class_attribution(trainer, images: torch.Tensor, labels: np.ndarray, alpha: float | None) -> np.ndarray:
    """Largest CAM cell of every (image, true positive class), optionally boosted by BoostLU(alpha)."""
    with torch.inference_mode():
        cams = trainer.model.class_activation_maps(trainer.normalise(images))
        if alpha is not None:
            cams = boostlu(cams, alpha)
        peak = cams.flatten(2).amax(2).numpy()
    return peak[labels == 1]


def pick(records: list[dict[str, Any]], dataset: str, variant: str) -> dict[str, Any] | None:
    """The finished record of `variant` on `dataset` with the smallest seed (defaults only)."""
    found = [r for r in records if r["status"] == "done" and r["variant"] == variant and r["spec"]["dataset"] == dataset
             and r.get("hparam_source", {}).get("kind", "defaults") == "defaults"]
    return min(found, key=lambda r: r["spec"]["seed"]) if found else None


def cam_figures(records: list[dict[str, Any]], dataset: str, checkpoints: Path, data_cache: Path,
                out_dir: Path, num_images: int = 500) -> list[Path]:
    """The attribution histogram (full, an, an + BoostLU at inference) and the CAM grid (ll-r vs ll-r+boostlu)."""
    full, an = pick(records, dataset, "full"), pick(records, dataset, "an")
    written = []
    if full and an:
        series = {}
        for name, record, alpha in (("Full labels", full, None), ("AN", an, None),
                                    ("AN + BoostLU (inference)", an, an["spec"]["boost_alpha"])):
            trainer = load_model(record, checkpoints, data_cache)
            images = trainer.data.test_images[:num_images]
            series[name] = positive_class_attribution(trainer, images, trainer.data.test_labels[:num_images], alpha)
        figure, axis = plt.subplots(figsize=(7, 4.5))
        bins = np.linspace(min(v.min() for v in series.values()), max(v.max() for v in series.values()), 60)
        for name, values in series.items():
            axis.hist(values, bins=bins, alpha=0.45, label=f"{name} (median {np.median(values):.1f})")
        axis.set(title=f"{dataset}: largest CAM cell of true positive classes ({num_images} test images)",
                 xlabel="attribution score (CAM logit)", ylabel="count")
        axis.legend()
        written.append(save(figure, out_dir / f"cam_attribution_{dataset}.png"))
    plain, boosted = pick(records, dataset, "ll-r"), pick(records, dataset, "ll-r+boostlu")
    if plain and boosted:
        written.append(cam_grid(plain, boosted, checkpoints, data_cache, out_dir / f"cam_examples_{dataset}.png"))
    return written


def cam_grid(plain: dict[str, Any], boosted: dict[str, Any], checkpoints: Path, data_cache: Path, path: Path,
             rows: int = 4) -> Path:
    """Test images with the CAM of one positive class each, for a model without and with BoostLU."""
    models = [(plain["variant"], load_model(plain, checkpoints, data_cache)),
              (boosted["variant"], load_model(boosted, checkpoints, data_cache))]
    data = models[0][1].data
    figure, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows))
    for row in range(rows):
        image = data.test_images[row:row + 1]
        cls = int(np.flatnonzero(data.test_labels[row])[0])
        axes[row, 0].imshow(image[0].permute(1, 2, 0).squeeze().numpy(), cmap="gray")
        axes[row, 0].set_title(f"class {data.class_names[cls]}", fontsize=9)
        for column, (name, trainer) in enumerate(models, 1):
            with torch.inference_mode():
                cams = trainer.model.class_activation_maps(trainer.normalise(image))
                if trainer.model.boostlu_infer:
                    cams = boostlu(cams, trainer.model.boost_alpha)
            cam = cams[0, cls].numpy()
            axes[row, column].imshow(image[0].permute(1, 2, 0).squeeze().numpy(), cmap="gray")
            extent = (0, image.shape[-1], image.shape[-2], 0)
            shown = axes[row, column].imshow(cam, cmap="jet", alpha=0.5, extent=extent)
            axes[row, column].set_title(f"{name} (max {cam.max():.1f})", fontsize=9)
            figure.colorbar(shown, ax=axes[row, column], fraction=0.046)
    for axis in axes.flat:
        axis.axis("off")
    return save(figure, path)
