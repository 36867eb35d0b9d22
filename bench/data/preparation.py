"""Preparing a real dataset: `pamlbench data prepare NAME --raw DIR --out DIR`.

The dataset plugin (a `bench.prepared.PreparedDataset`) reads the official files into `OfficialData` (the official
train and test splits, in the reference preprocessing's row order). `prepare` then writes, into a hidden staging
folder beside `--out` that is renamed to `--out` only when everything succeeded:

    manifest.json                  dataset, classes, split sizes, image root, checksums of every file below
    images.txt                     image paths relative to the image root, rows: train, val, test
    labels.npy                     full label matrix (C columns; 1 positive, 0 negative; OpenImages: -1 = not annotated)
    splits.npz                     row indices of train, val, test, and `official`: the official train split's row
                                   of every train and val row (the order the reference draws labels in)
    annotated.npy                  the dataset's own partial annotations of the train+val rows (OpenImages only)
    images_<size>.u8               optional decoded-image cache (--image-cache): uint8 N x 3 x size x size, .npy format

Splits (Cole et al.'s `datasets.py`): val = 20 % of the official train split, n_val = round(0.2 N),
perm = RandomState(1200).permutation(N), train = sort(perm[:N - n_val]), val = sort(perm[-n_val:]); test = the
official held-out split.

This module does not enter the code version: everything it writes is checksummed in the manifest, and a run's data
fingerprint is the hash of those checksums, so a change here that changes the output changes the run key.

Faults. The free space is checked against the decoded cache before anything is written (3 x size x size bytes per
image: 602,112 at 448 px). The cache file is allocated in full before decoding and filled with ordinary writes (not
through a memory map), so a disk that fills up anyway is an error naming the path, never a SIGBUS. The decoding
workers are terminated on every exit path, and the staging folder is removed on any error, on Ctrl-C and on
SIGTERM (which the command line turns into an exception like Ctrl-C). The workers come from a fork server (a fresh
single-threaded process that has imported this module), never from a fork of the command: a fork of a process with
threads can inherit a lock another thread holds and wait on it forever, and it inherits the command's Python SIGTERM
handler, which a process stuck in C never runs, so that terminating such a worker would wait forever too.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from bench.errors import UserError
from bench.prepared import FORMAT, OfficialData, PreparedDataset, decode
from bench.records import atomic_text, atomic_write

VAL_FRACTION = 0.2
SPLIT_SEED = 1200
"""Seed of the split permutation (Cole et al.'s), not a label seed."""
CHUNK_IMAGES = 64
"""Images a decoding worker handles per task."""


def cole_split(num_rows: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) row indices of the official train split, Cole et al.'s `datasets.py`."""
    num_val = int(np.round(VAL_FRACTION * num_rows))
    perm = np.random.RandomState(seed).permutation(num_rows)
    return np.sort(perm[:num_rows - num_val]), np.sort(perm[-num_val:]) if num_val else np.array([], dtype=int)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_bytes(num_images: int, size: int) -> int:
    """Bytes of the decoded cache's pixels: 3 x size x size per image."""
    return num_images * 3 * size * size


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e9:.1f} GB" if num_bytes >= 1e9 else f"{num_bytes / 1e6:.1f} MB"


def check_free_space(folder: Path, needed: int) -> None:
    """UserError when `folder`'s file system has fewer than `needed` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise UserError(f"the decoded image cache needs {_size(needed)} but {folder} has {_size(free)} "
                        "free: free some space, choose another --out, or prepare without --image-cache")


def npy_bytes(array: np.ndarray) -> bytes:
    """`array` in .npy format."""
    stream = io.BytesIO()
    np.save(stream, array)
    return stream.getvalue()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """`np.savez` with fixed member timestamps, so that the same data gives the same bytes (and checksum)."""
    stream = io.BytesIO()
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(member, "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(array), allow_pickle=False)
    return stream.getvalue()


def _npy_header(shape: tuple[int, ...]) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
                                                  "fortran_order": False, "shape": shape})
    return header.getvalue()


DECODING = multiprocessing.get_context("forkserver")
"""Where decoding workers come from: a fork server that has imported this module, so that a worker starts clean and
at once (see the module docstring)."""
DECODING.set_forkserver_preload([__name__])


def _ignore_interrupts() -> None:
    """Decoding workers leave Ctrl-C to the parent, which terminates them (SIGTERM, default action)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _decode_chunk(args: tuple[list[str], int]) -> np.ndarray:
    paths, size = args
    return np.stack([decode(p, size) for p in paths]) if paths else np.zeros((0, 3, size, size), np.uint8)


def decode_all(paths: list[str], size: int, cache: Path | None, *, progress: bool = True) -> None:
    """Decode every image (to check it) in worker processes, writing them in order to `cache` (.npy) when given.

    The cache file is allocated in full first (`posix_fallocate`), so a disk without room fails before decoding;
    the workers are terminated whatever happens.
    """
    from tqdm import tqdm

    jobs = [(paths[i:i + CHUNK_IMAGES], size) for i in range(0, len(paths), CHUNK_IMAGES)]
    target = None
    try:
        if cache is not None:
            header = _npy_header((len(paths), 3, size, size))
            target = open(cache, "wb")
            os.posix_fallocate(target.fileno(), 0, len(header) + cache_bytes(len(paths), size))
            target.write(header)
        workers = max(1, min(os.cpu_count() or 1, 8))
        with DECODING.Pool(workers, initializer=_ignore_interrupts) as pool, \
                tqdm(total=len(paths), desc="decoding", unit="image", disable=not progress or not sys.stderr.isatty(),
                     dynamic_ncols=True) as bar:
            for images in pool.imap(_decode_chunk, jobs):
                if target is not None:
                    target.write(np.ascontiguousarray(images).tobytes())
                bar.update(len(images))
        if target is not None:
            target.flush()
            os.fsync(target.fileno())
    except OSError as error:
        raise UserError(f"cannot write {cache}: {error.strerror or error}") from None
    finally:
        if target is not None:
            try:
                target.close()
            except OSError:
                pass  # the write error above is the one reported


def staged_files(data: OfficialData, train_rows: np.ndarray, val_rows: np.ndarray,
                 paths: list[str]) -> dict[str, bytes]:
    """The small files of a prepared folder, by name, with their contents."""
    labels = np.concatenate([data.train_labels[train_rows], data.train_labels[val_rows], data.test_labels])
    num_train, num_val = len(train_rows), len(val_rows)
    files = {
        "labels.npy": npy_bytes(labels),
        "splits.npz": npz_bytes({
            "train": np.arange(num_train), "val": np.arange(num_train, num_train + num_val),
            "test": np.arange(num_train + num_val, len(labels)), "official": np.concatenate([train_rows, val_rows])}),
        "images.txt": ("\n".join(paths) + "\n").encode(),
    }
    if data.observed_train is not None:
        annotated = np.concatenate([data.observed_train[train_rows], data.observed_train[val_rows]])
        files["annotated.npy"] = npy_bytes(annotated.astype(np.float32))
    return files


def read_and_check(plugin: PreparedDataset, raw: Path) -> OfficialData:
    """The official data of `plugin` under `raw`, with label shapes checked against the image lists."""
    data = plugin.read_official(raw)
    num_classes = len(data.class_names)
    for split, labels, images in (("train", data.train_labels, data.train_images),
                                  ("test", data.test_labels, data.test_images)):
        if labels.ndim != 2 or labels.shape[1] != num_classes or len(labels) != len(images):
            raise UserError(f"{plugin.name}: {split} labels have shape {labels.shape} for {len(images)} images and "
                            f"{num_classes} classes: the annotation files do not match each other")
    return data


def prepare(plugin: PreparedDataset, raw: Path, out: Path, *, cache_size: int | None = None,
            verify: bool = True, progress: bool = True) -> dict:
    """Read the official files of `plugin` under `raw` and write the prepared folder `out` (atomically).

    Every check (input files, images present, free space for the cache) comes before the first write; on any error
    or interruption nothing is left beside `out`.
    """
    if not raw.is_dir():
        raise UserError(f"raw folder {raw} does not exist: point --raw at the unpacked official download")
    if out.exists():
        raise UserError(f"output folder {out} exists already: remove it or choose another --out")
    if not out.parent.is_dir():
        raise UserError(f"the folder {out.parent} that should hold --out does not exist: create it first")
    data = read_and_check(plugin, raw)
    train_rows, val_rows = cole_split(len(data.train_labels))
    paths = ([data.train_images[i] for i in train_rows] + [data.train_images[i] for i in val_rows]
             + data.test_images)
    missing = next((p for p in paths if not (data.image_root / p).exists()), None)
    if missing is not None:
        raise UserError(f"image {data.image_root / missing} is listed in the annotations but absent: restore it from "
                        "the official download")
    if cache_size:
        check_free_space(out.parent, cache_bytes(len(paths), cache_size))
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as error:
        raise UserError(f"cannot write in {out.parent}: {error.strerror or error}") from None
    try:
        for name, contents in staged_files(data, train_rows, val_rows, paths).items():
            atomic_write(staging / name, contents)
        if verify or cache_size:
            decode_all([str(data.image_root / p) for p in paths], cache_size or 32,
                       staging / f"images_{cache_size}.u8" if cache_size else None, progress=progress)
        manifest = {
            "format": FORMAT, "dataset": plugin.name, "class_names": data.class_names,
            "image_root": str(data.image_root.resolve()),
            "splits": {"train": len(train_rows), "val": len(val_rows), "test": len(data.test_labels)},
            "annotated": data.observed_train is not None, "cache_size": cache_size,
            "files": {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if not p.name.endswith(".u8")},
        }
        atomic_text(staging / "manifest.json", json.dumps(manifest, indent=1) + "\n")
        os.chmod(staging, 0o755)
        try:
            staging.rename(out)
        except OSError as error:
            raise UserError(f"cannot rename {staging} to {out}: {error.strerror or error}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest
