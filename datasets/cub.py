"""cub: CUB-200-2011 attributes, 312 classes, as Cole et al.'s `preproc/format_cub.py` formats it.

Official files under `CUB_200_2011/`: `images.txt` (`<id> <path>`), `train_test_split.txt` (`<id> <is_train>`),
`attributes/image_attribute_labels.txt` (`<image id> <attribute id> <is_present> <certainty> <time>`; a few lines of
the official file carry an extra field) and `attributes.txt` (names, in the dataset root or `attributes/`). Labels are
`is_present` (certainty ignored) and int, as in the reference; images in id order. Expected 4795 / 1199 / 5794.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench import UserError
from bench.prepared import OfficialData, PreparedDataset

NUM_ATTRIBUTES = 312


def cub_root(raw: Path) -> Path:
    for candidate in (raw / "CUB_200_2011", raw):
        if (candidate / "images.txt").exists():
            return candidate
    raise UserError(f"no CUB_200_2011/images.txt under {raw}: unpack CUB_200_2011.tgz there")


def rows_of(path: Path, min_fields: int) -> list[list[str]]:
    if not path.exists():
        raise UserError(f"missing CUB file {path}: the CUB-200-2011 download is incomplete")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if fields and (len(fields) < min_fields or not fields[0].isdigit()):
            raise UserError(f"{path}:{number}: cannot parse {line!r}")
        if fields:
            rows.append(fields)
    return rows


class Cub(PreparedDataset):
    name = "cub"
    summary = "CUB-200-2011 attributes (312 classes), Cole et al.'s formatting; needs `pamlbench data prepare cub`"
    defaults = {"lr": 1e-4, "batch_size": 8, "epochs": 10, "backbone": "resnet50", "head_lr_mult": 1.0}
    recipes = ("paper",)
    expected_sizes = (4795, 1199, 5794)

    def read_official(self, raw: Path) -> OfficialData:
        root = cub_root(raw)
        paths = {int(r[0]): f"images/{r[1]}" for r in rows_of(root / "images.txt", 2)}
        is_train = {int(r[0]): r[1] == "1" for r in rows_of(root / "train_test_split.txt", 2)}
        names_file = next((p for p in (root / "attributes.txt", root / "attributes" / "attributes.txt",
                                       root.parent / "attributes.txt") if p.exists()), root / "attributes.txt")
        names = [r[1] for r in rows_of(names_file, 2)]
        if len(names) != NUM_ATTRIBUTES:
            raise UserError(f"{names_file} lists {len(names)} attributes, not {NUM_ATTRIBUTES}: class-count mismatch")
        ids = sorted(paths)
        row_of = {image_id: row for row, image_id in enumerate(ids)}
        labels = np.zeros((len(ids), NUM_ATTRIBUTES), dtype=np.int64)
        for fields in rows_of(root / "attributes" / "image_attribute_labels.txt", 3):
            image_id, attribute = int(fields[0]), int(fields[1])
            if image_id not in row_of or not 1 <= attribute <= NUM_ATTRIBUTES:
                raise UserError(f"image_attribute_labels.txt refers to unknown image {image_id} or attribute "
                                f"{attribute}")
            labels[row_of[image_id], attribute - 1] = int(fields[2] == "1")
        train = [i for i in ids if is_train.get(i)]
        test = [i for i in ids if not is_train.get(i)]
        return OfficialData(names, root, [paths[i] for i in train], labels[[row_of[i] for i in train]],
                            [paths[i] for i in test], labels[[row_of[i] for i in test]])
