"""openimages: OpenImages V3 with its real partial annotations (human-verified positives and negatives).

Files in `--raw`: `classes-trainable.txt` (one label id per line: the class order), optionally `dict.csv`
(`label id,name`), and `{train,test}/annotations-human.csv` (`ImageID,Source,LabelName,Confidence`, Confidence 1 =
positive, 0 = verified negative); images at `{train,test}/images/<ImageID>.jpg`. Labels not in the trainable list
are ignored; an image without any trainable annotation is dropped.

Training sees the annotations as they are (protocol `annotated`: 1 / -1 observed, 0 = not annotated); evaluation is
per class over the images annotated for that class. The papers train ResNet-101 on it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bench import UserError
from bench.prepared import OfficialData, PreparedDataset


def read_split(raw: Path, split: str, column: dict[str, int]) -> tuple[list[str], np.ndarray]:
    path = raw / split / "annotations-human.csv"
    if not path.exists():
        raise UserError(f"missing OpenImages annotation file {path}")
    annotations: dict[str, dict[int, float]] = {}
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        if not {"ImageID", "LabelName", "Confidence"} <= set(reader.fieldnames or []):
            raise UserError(f"{path} does not parse: expected columns ImageID,Source,LabelName,Confidence")
        for row in reader:
            if row["LabelName"] in column:
                try:
                    value = 1.0 if float(row["Confidence"]) >= 0.5 else 0.0
                except ValueError:
                    raise UserError(f"{path}: bad Confidence {row['Confidence']!r} for {row['ImageID']}") from None
                annotations.setdefault(row["ImageID"], {})[column[row["LabelName"]]] = value
    ids = sorted(annotations)
    labels = np.full((len(ids), len(column)), -1.0)
    for row, image_id in enumerate(ids):
        for cls, value in annotations[image_id].items():
            labels[row, cls] = value
    return [f"{split}/images/{i}.jpg" for i in ids], labels


class OpenImages(PreparedDataset):
    name = "openimages"
    summary = "OpenImages V3 with its real partial annotations; needs `pamlbench data prepare openimages`"
    defaults = {"lr": 1e-5, "batch_size": 16, "epochs": 10, "backbone": "resnet101", "head_lr_mult": 1.0}
    frequency_groups = 5

    def read_official(self, raw: Path) -> OfficialData:
        classes_file = raw / "classes-trainable.txt"
        if not classes_file.exists():
            raise UserError(f"missing OpenImages class list {classes_file}")
        label_ids = [line.strip() for line in classes_file.read_text().splitlines() if line.strip()]
        names = dict.fromkeys(label_ids)
        if (raw / "dict.csv").exists():
            with open(raw / "dict.csv", newline="") as stream:
                names.update({row[0]: row[1] for row in csv.reader(stream) if len(row) >= 2 and row[0] in names})
        column = {label: index for index, label in enumerate(label_ids)}
        train_images, train_labels = read_split(raw, "train", column)
        test_images, test_labels = read_split(raw, "test", column)
        observed = np.where(train_labels == 1, 1.0, np.where(train_labels == 0, -1.0, 0.0))
        return OfficialData([names[label] or label for label in label_ids], raw, train_images, train_labels,
                            test_images, test_labels, observed_train=observed)
