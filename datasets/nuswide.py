"""nuswide: NUS-WIDE, 81 classes, from the files Cole et al. distribute already formatted.

Files in `--raw`: `formatted_train_images.npy`, `formatted_train_labels.npy`, `formatted_val_images.npy`,
`formatted_val_labels.npy` (Cole et al.'s re-crawled subset; their `val` is the official test split), image paths in
the images arrays relative to `--raw` (or to `--raw/images`), and optionally `Concepts81.txt` with the class names.
Note that Zhou et al. use the official NUS-WIDE instead: their NUS numbers are not strictly comparable.
Expected sizes 120000 / 30000 / 60260.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench import UserError
from bench.prepared import OfficialData, PreparedDataset

NUM_CLASSES = 81


def load_npy(path: Path) -> np.ndarray:
    if not path.exists():
        raise UserError(f"missing NUS-WIDE file {path}: put Cole et al.'s formatted .npy files in --raw")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        raise UserError(f"{path} is not a plain .npy array ({error})") from None


class NusWide(PreparedDataset):
    name = "nuswide"
    summary = "NUS-WIDE (81 classes) from Cole et al.'s formatted files; needs `pamlbench data prepare nuswide`"
    defaults = {"lr": 1e-5, "batch_size": 16, "epochs": 10, "backbone": "resnet50", "head_lr_mult": 1.0}
    recipes = ("paper",)
    expected_sizes = (120000, 30000, 60260)

    def read_official(self, raw: Path) -> OfficialData:
        arrays = {f"{split}_{kind}": load_npy(raw / f"formatted_{split}_{kind}.npy")
                  for split in ("train", "val") for kind in ("images", "labels")}
        for split in ("train", "val"):
            if arrays[f"{split}_labels"].ndim != 2 or arrays[f"{split}_labels"].shape[1] != NUM_CLASSES:
                raise UserError(f"formatted_{split}_labels.npy has shape {arrays[f'{split}_labels'].shape}: expected "
                                f"{NUM_CLASSES} classes (class-count mismatch)")
        concepts = raw / "Concepts81.txt"
        names = concepts.read_text().split() if concepts.exists() else [f"concept{c:02d}" for c in range(NUM_CLASSES)]
        if len(names) != NUM_CLASSES:
            raise UserError(f"{concepts} lists {len(names)} concepts, not {NUM_CLASSES}: class-count mismatch")
        root = raw / "images" if (raw / "images").is_dir() else raw
        return OfficialData(names, root, [str(p) for p in arrays["train_images"]],
                            arrays["train_labels"].astype(np.float64), [str(p) for p in arrays["val_images"]],
                            arrays["val_labels"].astype(np.float64))
