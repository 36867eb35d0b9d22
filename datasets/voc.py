"""voc: PASCAL VOC 2012, 20 classes, as Cole et al.'s `preproc/format_pascal.py` formats it.

Official files: `VOCdevkit/VOC2012/ImageSets/Main/<class>_{train,val}.txt` (lines `<image id> <flag>`) and
`JPEGImages/<image id>.jpg`. An image gets a class when the flag is 1 ("difficult", 0, counts as negative); only
images with at least one positive are kept; image names are sorted; classes in the fixed alphabetical order.
Official train -> train + val (Cole's 80/20 split), official val -> test. Expected sizes 4574 / 1143 / 5823.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench import UserError
from bench.prepared import OfficialData, PreparedDataset

CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
           "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor"]


def voc_root(raw: Path) -> Path:
    for candidate in (raw / "VOCdevkit" / "VOC2012", raw / "VOC2012", raw):
        if (candidate / "ImageSets" / "Main").is_dir():
            return candidate
    raise UserError(f"no VOC2012 ImageSets/Main folder under {raw}: unpack VOCtrainval_11-May-2012.tar there")


def read_phase(root: Path, phase: str) -> tuple[list[str], np.ndarray]:
    positives: dict[str, list[int]] = {}
    for index, name in enumerate(CLASSES):
        path = root / "ImageSets" / "Main" / f"{name}_{phase}.txt"
        if not path.exists():
            raise UserError(f"missing VOC annotation file {path}: the VOC2012 download is incomplete")
        for number, line in enumerate(path.read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("1", "0", "-1"):
                raise UserError(f"{path}:{number}: expected '<image id> <1|0|-1>', got {line!r}")
            if fields[1] == "1":
                positives.setdefault(fields[0], []).append(index)
    names = sorted(positives)
    labels = np.zeros((len(names), len(CLASSES)), dtype=np.float64)
    for row, name in enumerate(names):
        labels[row, positives[name]] = 1.0
    return [str((root / "JPEGImages" / f"{n}.jpg").relative_to(root)) for n in names], labels


class Voc(PreparedDataset):
    name = "voc"
    summary = "PASCAL VOC 2012 (20 classes), Cole et al.'s formatting; needs `pamlbench data prepare voc`"
    defaults = {"lr": 1e-5, "batch_size": 8, "epochs": 10, "backbone": "resnet50", "head_lr_mult": 1.0}
    recipes = ("paper",)
    expected_sizes = (4574, 1143, 5823)

    def read_official(self, raw: Path) -> OfficialData:
        root = voc_root(raw)
        train_images, train_labels = read_phase(root, "train")
        test_images, test_labels = read_phase(root, "val")
        return OfficialData(CLASSES, root, train_images, train_labels, test_images, test_labels)
