"""Test inputs and helpers: small fixture trees in the official formats of the real datasets (real file layouts,
real JPEGs), a small grid file, and what tests of whole `pamlbench` runs compare."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

TEST_PLUGINS = Path(__file__).resolve().parent / "plugins"
"""Plugins for tests only: `datasets/mini_mosaic.py`."""


@contextlib.contextmanager
def plugin_path(root: Path) -> Iterator[Path]:
    """`root` added to PAMLBENCH_PLUGIN_PATH (subprocesses started meanwhile inherit it) and the registry read again;
    both are restored afterwards."""
    from bench import registry

    saved = os.environ.get("PAMLBENCH_PLUGIN_PATH")
    os.environ["PAMLBENCH_PLUGIN_PATH"] = os.pathsep.join(filter(None, [saved, str(root)]))
    registry.methods.cache_clear()
    registry.datasets.cache_clear()
    try:
        yield root
    finally:
        if saved is None:
            os.environ.pop("PAMLBENCH_PLUGIN_PATH", None)
        else:
            os.environ["PAMLBENCH_PLUGIN_PATH"] = saved
        registry.methods.cache_clear()
        registry.datasets.cache_clear()


PROJECT_GRID = "datasets = ['digits-mosaic']\nvariants = ['an']\nseeds = [0]\ndevice = 'cpu'\n[overrides]\nepochs = 1\n"
"""The grid file of the trained project that the bad-input, hostile-input and plan tests start from."""


def write_grid(path: Path, variants: list[str], seeds: list[int], epochs: int, dataset: str = "mini-mosaic") -> Path:
    """A grid file of `variants` x `seeds` on the CPU, `epochs` epochs each, on `dataset` (mini-mosaic by default,
    which needs the `mini_mosaic` fixture)."""
    path.write_text(f"datasets = [{dataset!r}]\nvariants = {variants!r}\nseeds = {seeds!r}\ndevice = 'cpu'\n"
                    f"[overrides]\nepochs = {epochs}\n")
    return path


def metrics(results: Path) -> dict:
    """run key -> (val mAP, test mAP, per-class AP, validation curve) of every record in `results`."""
    from bench.records import read_records

    return {r["run_key"]: (r["val_map"], r["test_map"], r["per_class_ap"], [c["val_map"] for c in r["curve"]])
            for r in read_records(results)}


def finish(process, timeout: float = 600) -> tuple[int, str, str]:
    """Wait for a `pamlbench` subprocess: (exit status, stdout, stderr)."""
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: state, parent pid, ... (OSError once `pid` is gone)."""
    return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Whether process `pid` is running (not gone, not a zombie)."""
    try:
        return stat_fields(pid)[0] != "Z"
    except OSError:
        return False


def parent_pids() -> dict[int, int]:
    """Every live process's pid, with its parent's."""
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit():
                parents[int(entry.name)] = int(stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
    return parents


def jpeg(path: Path, rng: np.random.Generator, size: int = 24) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)).save(path, quality=80)


def my_images_folder(folder: Path, seed: int = 0) -> Path:
    """A --data folder of the README's example dataset (`my-images`): a learnable arrays.npz of 3 classes, each a
    bright quarter of a 16 x 16 grey image, 1 or 2 classes per image, 96 / 24 / 24 images."""
    rng = np.random.default_rng(seed)
    count, size = 144, 16
    labels = np.zeros((count, 3), dtype=np.int64)
    labels[np.arange(count), rng.integers(0, 3, count)] = 1
    labels[rng.random((count, 3)) < 0.25] = 1
    images = rng.integers(0, 60, (count, 1, size, size)).astype(np.uint8)
    corners = [(slice(0, 8), slice(0, 8)), (slice(0, 8), slice(8, 16)), (slice(8, 16), slice(0, 8))]
    for row, column in zip(*np.nonzero(labels), strict=True):
        images[row, 0, corners[column][0], corners[column][1]] += 180
    split = np.repeat([0, 1, 2], [96, 24, 24])
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "arrays.npz", images=images, labels=labels, split=split, class_names=np.array(["a", "b", "c"]))
    return folder


def voc_tree(raw: Path, train: int = 14, val: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """VOCdevkit/VOC2012 with ImageSets/Main/<cls>_{train,val}.txt and JPEGImages; returns the true flags."""
    import sys

    from bench import registry

    classes = sys.modules[registry.dataset_class("voc").__module__].CLASSES
    rng = np.random.default_rng(seed)
    root = raw / "VOCdevkit" / "VOC2012"
    flags = {}
    for phase, count, start in (("train", train, 0), ("val", val, 500)):
        ids = [f"2008_{start + i:06d}" for i in range(count)]
        matrix = rng.choice([1, -1, -1, -1, 0], size=(count, len(classes)))
        matrix[0] = -1  # an image without positives is dropped
        flags[phase] = (ids, matrix)
        for column, name in enumerate(classes):
            lines = [f"{image_id} {'' if matrix[row, column] < 0 else ' '}{matrix[row, column]}"
                     for row, image_id in enumerate(ids)]
            (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
            (root / "ImageSets" / "Main" / f"{name}_{phase}.txt").write_text("\n".join(lines) + "\n")
        for image_id in ids:
            jpeg(root / "JPEGImages" / f"{image_id}.jpg", rng)
    return flags


def coco_tree(raw: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    categories = [{"id": cid, "name": f"thing{cid}"} for cid in (1, 2, 3, 5, 7)]
    for phase, ids in (("train", [3, 12, 25, 100, 7, 41, 9, 200, 11, 30]), ("val", [5, 50, 8, 77])):
        images = [{"id": i, "file_name": f"COCO_{phase}2014_{i:012d}.jpg"} for i in ids]
        annotations = [{"image_id": i, "category_id": int(rng.choice([1, 2, 3, 5, 7])), "id": n}
                       for n, i in enumerate(ids[:-1] * 2)]  # the last image has no annotation: dropped
        (raw / "annotations").mkdir(parents=True, exist_ok=True)
        (raw / "annotations" / f"instances_{phase}2014.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories}))
        for image in images:
            jpeg(raw / f"{phase}2014" / image["file_name"], rng)


def cub_tree(raw: Path, count: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    root = raw / "CUB_200_2011"
    (root / "attributes").mkdir(parents=True, exist_ok=True)
    paths = [f"{1 + i % 3:03d}.Bird/Bird_{i}.jpg" for i in range(count)]
    (root / "images.txt").write_text("".join(f"{i + 1} {p}\n" for i, p in enumerate(paths)))
    (root / "train_test_split.txt").write_text("".join(f"{i + 1} {int(i % 3 != 0)}\n" for i in range(count)))
    (raw / "attributes.txt").write_text("".join(f"{a} has_part::{a}\n" for a in range(1, 313)))
    present = rng.integers(0, 2, (count, 312))
    lines = []
    for image in range(count):
        for attribute in range(312):
            extra = " 0" if (image, attribute) == (1, 5) else ""  # the official file has a few 6-field lines
            lines.append(f"{image + 1} {attribute + 1} {present[image, attribute]} 3 1.5{extra}")
    (root / "attributes" / "image_attribute_labels.txt").write_text("\n".join(lines) + "\n")
    for path in paths:
        jpeg(root / "images" / path, rng)
    return present


def nuswide_tree(raw: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    raw.mkdir(parents=True, exist_ok=True)
    for split, count in (("train", 10), ("val", 5)):
        names = np.array([f"Flickr/actor/{split}_{i}.jpg" for i in range(count)])
        np.save(raw / f"formatted_{split}_images.npy", names)
        np.save(raw / f"formatted_{split}_labels.npy", (rng.random((count, 81)) < 0.05).astype(np.float64))
        for name in names:
            jpeg(raw / "images" / name, rng)


def openimages_tree(raw: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    labels = ["/m/01", "/m/02", "/m/03"]
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "classes-trainable.txt").write_text("\n".join(labels) + "\n")
    (raw / "dict.csv").write_text('"/m/01","cat"\n"/m/02","dog"\n"/m/03","car"\n')
    for split, ids in (("train", [f"tr{i}" for i in range(8)]), ("test", [f"te{i}" for i in range(4)])):
        rows = ["ImageID,Source,LabelName,Confidence"]
        for n, image_id in enumerate(ids):
            rows.append(f"{image_id},verification,/m/0{1 + n % 3},1")
            rows.append(f"{image_id},verification,/m/0{1 + (n + 1) % 3},0")
            rows.append(f"{image_id},verification,/m/99,1")  # not a trainable class: ignored
        (raw / split).mkdir(parents=True, exist_ok=True)
        (raw / split / "annotations-human.csv").write_text("\n".join(rows) + "\n")
        for image_id in ids:
            jpeg(raw / split / "images" / f"{image_id}.jpg", rng)
