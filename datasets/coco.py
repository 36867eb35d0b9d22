"""coco: MS-COCO 2014, 80 classes, as Cole et al.'s `preproc/format_coco.py` formats it.

Official files: `annotations/instances_{train,val}2014.json` and the images in `train2014/`, `val2014/`. Only
images with at least one annotation are kept; image ids are sorted *as strings* (as the reference does); the class
index is the position in the file's `categories` list. Official train -> train + val, official val -> test.
Expected sizes 65665 / 16416 / 40137.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench import UserError
from bench.prepared import OfficialData, PreparedDataset


def read_phase(raw: Path, phase: str) -> tuple[list[str], np.ndarray, list[str]]:
    path = raw / "annotations" / f"instances_{phase}2014.json"
    if not path.exists():
        raise UserError(f"missing COCO annotation file {path}: unpack annotations_trainval2014.zip into {raw}")
    try:
        data = json.loads(path.read_text())
        categories = [c["id"] for c in data["categories"]]
        names = [c["name"] for c in data["categories"]]
        files = {image["id"]: image["file_name"] for image in data["images"]}
        annotations = [(a["image_id"], a["category_id"]) for a in data["annotations"]]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise UserError(f"COCO annotation file {path} does not parse ({type(error).__name__}: {error})") from None
    column = {category: index for index, category in enumerate(categories)}
    positives: dict[int, set[int]] = {}
    for image_id, category in annotations:
        if category not in column or image_id not in files:
            raise UserError(f"{path}: annotation refers to unknown image {image_id} or category {category}")
        positives.setdefault(image_id, set()).add(column[category])
    ids = sorted(positives, key=str)
    labels = np.zeros((len(ids), len(categories)), dtype=np.float64)
    for row, image_id in enumerate(ids):
        labels[row, sorted(positives[image_id])] = 1.0
    return [f"{phase}2014/{files[i]}" for i in ids], labels, names


class Coco(PreparedDataset):
    name = "coco"
    summary = "MS-COCO 2014 (80 classes), Cole et al.'s formatting; needs `pamlbench data prepare coco`"
    defaults = {"lr": 1e-5, "batch_size": 16, "epochs": 10, "backbone": "resnet50", "head_lr_mult": 1.0}
    recipes = ("paper",)
    expected_sizes = (65665, 16416, 40137)

    def read_official(self, raw: Path) -> OfficialData:
        train_images, train_labels, names = read_phase(raw, "train")
        test_images, test_labels, test_names = read_phase(raw, "val")
        if names != test_names:
            raise UserError("COCO train and val annotation files list different categories: class-count mismatch")
        return OfficialData(names, raw, train_images, train_labels, test_images, test_labels)
