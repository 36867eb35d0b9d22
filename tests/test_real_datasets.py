"""The real datasets' preparation from fixture trees in the official formats, and their errors."""

import json
import multiprocessing
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from fixtures import coco_tree, cub_tree, nuswide_tree, openimages_tree, voc_tree

from bench import registry
from bench.cli.main import main
from bench.data.preparation import cole_split, prepare
from bench.observation import single_positive
from bench.records import read_records
from bench.rundata import observed_labels


def prepared(name, raw, out, **options):
    return prepare(registry.load_dataset(name), raw, out, **options)


def rows_in_order(labels_train, labels_test):
    train, val = cole_split(len(labels_train))
    return np.concatenate([labels_train[train], labels_train[val], labels_test]), train, val


def test_cole_split_matches_reference_rule():
    train, val = cole_split(5717)
    assert (len(train), len(val)) == (4574, 1143)  # VOC's official train split -> Cole's table
    perm = np.random.RandomState(1200).permutation(5717)
    assert np.array_equal(train, np.sort(perm[:4574])) and np.array_equal(val, np.sort(perm[-1143:]))


def test_voc_prepare(tmp_path):
    flags = voc_tree(tmp_path / "raw")
    manifest = prepared("voc", tmp_path / "raw", tmp_path / "voc")
    out = tmp_path / "voc"
    ids, matrix = flags["train"]
    keep = (matrix == 1).any(1)
    train_labels = (matrix[keep] == 1).astype(float)  # difficult (0) counts as negative
    test_ids, test_matrix = flags["val"]
    test_labels = (test_matrix[(test_matrix == 1).any(1)] == 1).astype(float)
    expected, train_rows, val_rows = rows_in_order(train_labels, test_labels)
    assert np.array_equal(np.load(out / "labels.npy"), expected)
    assert manifest["splits"] == {"train": len(train_rows), "val": len(val_rows), "test": len(test_labels)}
    kept = sorted(i for i, k in zip(ids, keep, strict=True) if k)
    images = (out / "images.txt").read_text().split()
    assert images[:len(train_rows)] == [f"JPEGImages/{kept[i]}.jpg" for i in train_rows]
    # one draw path: the trainer draws on the official train rows in their official order, as Cole et al. do before
    # the split, for the prepared seed and any other
    splits = registry.load_dataset("voc").load(out, tmp_path, image_size=16)
    for seed in (1200, 7):
        draw = single_positive(train_labels, seed)
        assert np.array_equal(observed_labels(splits, "single-positive", seed),
                              np.concatenate([draw[train_rows], draw[val_rows]]))
    assert not list(out.glob("observed_*"))
    for name, digest in manifest["files"].items():
        import hashlib
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest


def test_coco_prepare_sorts_ids_as_strings_and_drops_unannotated(tmp_path):
    coco_tree(tmp_path / "raw")
    prepared("coco", tmp_path / "raw", tmp_path / "coco")
    images = (tmp_path / "coco" / "images.txt").read_text().split()
    train_ids = sorted([3, 12, 25, 100, 7, 41, 9, 200, 11], key=str)  # 30 has no annotation
    train, val = cole_split(len(train_ids))
    assert images[:len(train)] == [f"train2014/COCO_train2014_{train_ids[i]:012d}.jpg" for i in train]
    assert len(images) == 9 + 3
    assert json.loads((tmp_path / "coco" / "manifest.json").read_text())["class_names"][3] == "thing5"


def test_coco_labels_are_each_image_s_annotated_categories(tmp_path):
    coco_tree(tmp_path / "raw")
    manifest = prepared("coco", tmp_path / "raw", tmp_path / "coco")
    positives = {}
    for phase in ("train", "val"):
        data = json.loads((tmp_path / "raw" / "annotations" / f"instances_{phase}2014.json").read_text())
        column = {category["id"]: index for index, category in enumerate(data["categories"])}
        for annotation in data["annotations"]:
            positives.setdefault((phase, annotation["image_id"]), set()).add(column[annotation["category_id"]])
    labels = np.load(tmp_path / "coco" / "labels.npy")
    images = (tmp_path / "coco" / "images.txt").read_text().split()
    assert set(np.unique(labels)) == {0.0, 1.0} and labels.shape == (12, 5)
    for path, row in zip(images, labels, strict=True):
        phase = path.split("2014/")[0]
        assert set(np.flatnonzero(row == 1)) == positives[(phase, int(path[-16:-4]))], path
    assert manifest["class_names"] == ["thing1", "thing2", "thing3", "thing5", "thing7"]


def test_nuswide_takes_its_labels_image_folder_and_concept_names_as_given(tmp_path):
    raw = tmp_path / "raw"
    nuswide_tree(raw)
    concepts = [f"concept_{c}" for c in range(81)]
    (raw / "Concepts81.txt").write_text("\n".join(concepts) + "\n")
    manifest = prepared("nuswide", raw, tmp_path / "nus")
    assert manifest["class_names"] == concepts and manifest["image_root"] == str(raw / "images")
    given = {str(path): row for split in ("train", "val") for path, row in
             zip(np.load(raw / f"formatted_{split}_images.npy"), np.load(raw / f"formatted_{split}_labels.npy"),
                 strict=True)}
    images = (tmp_path / "nus" / "images.txt").read_text().split()
    assert np.array_equal(np.load(tmp_path / "nus" / "labels.npy"), np.array([given[path] for path in images]))


def replace_in(path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new, 1))


FORMAT_ERRORS = {
    "nuswide: 80 classes": (
        "nuswide", lambda raw: np.save(raw / "formatted_val_labels.npy", np.zeros((5, 80))),
        "formatted_val_labels.npy has shape (5, 80): expected 81 classes (class-count mismatch)"),
    "nuswide: labels of one dimension": (
        "nuswide", lambda raw: np.save(raw / "formatted_train_labels.npy", np.zeros(81)),
        "formatted_train_labels.npy has shape (81,): expected 81 classes"),
    "nuswide: 80 concepts": (
        "nuswide", lambda raw: (raw / "Concepts81.txt").write_text("a\n" * 80),
        "Concepts81.txt lists 80 concepts, not 81: class-count mismatch"),
    "nuswide: a pickled array": (
        "nuswide", lambda raw: np.save(raw / "formatted_train_images.npy", np.array([{"a": 1}]), allow_pickle=True),
        "formatted_train_images.npy is not a plain .npy array"),
    "nuswide: a missing file": (
        "nuswide", lambda raw: (raw / "formatted_val_images.npy").unlink(), "missing NUS-WIDE file"),
    "coco: an annotation of an unknown image": (
        "coco", lambda raw: replace_in(raw / "annotations" / "instances_val2014.json", '"image_id": 5,',
                                       '"image_id": 999,'),
        "instances_val2014.json: annotation refers to unknown image 999 or category"),
    "coco: an annotation of an unknown category": (
        "coco", lambda raw: replace_in(raw / "annotations" / "instances_train2014.json", '"category_id": ',
                                       '"category_id": 4'),
        "instances_train2014.json: annotation refers to unknown image 3 or category 4"),
    "coco: a file that does not parse": (
        "coco", lambda raw: (raw / "annotations" / "instances_val2014.json").write_text('{"images": []}'),
        "instances_val2014.json does not parse (KeyError: 'categories')"),
    "coco: a missing file": (
        "coco", lambda raw: (raw / "annotations" / "instances_train2014.json").unlink(),
        "missing COCO annotation file"),
    "cub: a line that does not parse": (
        "cub", lambda raw: replace_in(raw / "CUB_200_2011" / "train_test_split.txt", "2 1\n", "two 1\n"),
        "train_test_split.txt:2: cannot parse 'two 1'"),
    "cub: a line with too few fields": (
        "cub", lambda raw: replace_in(raw / "CUB_200_2011" / "images.txt", "3 003.Bird/Bird_2.jpg\n", "3\n"),
        "images.txt:3: cannot parse '3'"),
    "cub: an unknown image": (
        "cub", lambda raw: replace_in(raw / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt", "\n12 1 ",
                                      "\n13 1 "),
        "image_attribute_labels.txt refers to unknown image 13 or attribute 1"),
    "cub: an attribute out of range": (
        "cub", lambda raw: replace_in(raw / "CUB_200_2011" / "attributes" / "image_attribute_labels.txt", "\n3 312 ",
                                      "\n3 313 "),
        "image_attribute_labels.txt refers to unknown image 3 or attribute 313"),
    "cub: a missing file": (
        "cub", lambda raw: (raw / "CUB_200_2011" / "train_test_split.txt").unlink(),
        "missing CUB file"),
    "cub: no attribute names": (
        "cub", lambda raw: (raw / "attributes.txt").unlink(),
        "missing CUB file {raw}/CUB_200_2011/attributes.txt: the CUB-200-2011 download is incomplete"),
    "openimages: no annotations of a split": (
        "openimages", lambda raw: (raw / "test" / "annotations-human.csv").unlink(),
        "missing OpenImages annotation file"),
    "cub: no images.txt": (
        "cub", lambda raw: (raw / "CUB_200_2011" / "images.txt").unlink(), "no CUB_200_2011/images.txt under"),
    "openimages: a column missing": (
        "openimages", lambda raw: replace_in(raw / "test" / "annotations-human.csv", "Confidence", "Score"),
        "annotations-human.csv does not parse: expected columns ImageID,Source,LabelName,Confidence"),
    "openimages: a bad confidence": (
        "openimages", lambda raw: replace_in(raw / "train" / "annotations-human.csv", "tr0,verification,/m/01,1",
                                             "tr0,verification,/m/01,yes"),
        "annotations-human.csv: bad Confidence 'yes' for tr0"),
    "openimages: no class list": (
        "openimages", lambda raw: (raw / "classes-trainable.txt").unlink(), "missing OpenImages class list"),
}


@pytest.mark.parametrize("case", list(FORMAT_ERRORS))
def test_coco_nuswide_cub_and_openimages_format_errors_are_one_line(case, tmp_path, capsys):
    name, damage, message = FORMAT_ERRORS[case]
    {"coco": coco_tree, "nuswide": nuswide_tree, "cub": cub_tree, "openimages": openimages_tree}[name](tmp_path / "raw")
    damage(tmp_path / "raw")
    assert main(["data", "prepare", name, "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message.format(raw=tmp_path / "raw") in err, err
    assert not (tmp_path / "out").exists()


def test_openimages_takes_exactly_its_three_columns_and_names_from_dict_csv(tmp_path):
    raw = tmp_path / "raw"
    openimages_tree(raw)
    for split in ("train", "test"):
        path = raw / split / "annotations-human.csv"
        path.write_text("\n".join(",".join(row.split(",")[i] for i in (0, 2, 3))
                                  for row in path.read_text().splitlines()) + "\n")
    (raw / "dict.csv").write_text('"/m/01","cat"\n"/m/03"\n"/m/99","bird"\n')   # /m/03 unnamed, /m/99 untrained
    manifest = prepared("openimages", raw, tmp_path / "oi")
    assert manifest["class_names"] == ["cat", "/m/02", "/m/03"]
    assert (np.load(tmp_path / "oi" / "labels.npy") == 1).sum() == 12


@pytest.mark.parametrize("place", ["CUB_200_2011/attributes.txt", "CUB_200_2011/attributes/attributes.txt",
                                   "attributes.txt"])
def test_cub_reads_its_attribute_names_where_either_download_puts_them(place, tmp_path):
    raw = tmp_path / "raw"
    cub_tree(raw)
    (raw / "attributes.txt").unlink()
    (raw / place).write_text("".join(f"{a} has_{a}::x\n" for a in range(1, 313)))
    assert prepared("cub", raw, tmp_path / "cub")["class_names"][:2] == ["has_1::x", "has_2::x"]


def test_nuswide_images_may_lie_in_the_raw_folder_itself(tmp_path):
    raw = tmp_path / "raw"
    nuswide_tree(raw)
    (raw / "images" / "Flickr").rename(raw / "Flickr")
    (raw / "images").rmdir()
    assert prepared("nuswide", raw, tmp_path / "nus")["image_root"] == str(raw)


def test_cub_prepare_int_labels_and_official_split(tmp_path):
    present = cub_tree(tmp_path / "raw")
    manifest = prepared("cub", tmp_path / "raw", tmp_path / "cub")
    train_ids = [i for i in range(12) if i % 3 != 0]
    test_ids = [i for i in range(12) if i % 3 == 0]
    expected, _, _ = rows_in_order(present[train_ids], present[test_ids])
    assert np.array_equal(np.load(tmp_path / "cub" / "labels.npy"), expected)
    assert np.load(tmp_path / "cub" / "labels.npy").dtype.kind == "i"
    assert len(manifest["class_names"]) == 312


def test_nuswide_and_openimages_prepare(tmp_path):
    nuswide_tree(tmp_path / "nus-raw")
    assert prepared("nuswide", tmp_path / "nus-raw", tmp_path / "nus")["splits"] == {"train": 8, "val": 2, "test": 5}
    openimages_tree(tmp_path / "oi-raw")
    manifest = prepared("openimages", tmp_path / "oi-raw", tmp_path / "oi")
    assert manifest["class_names"] == ["cat", "dog", "car"] and manifest["annotated"] is True
    labels = np.load(tmp_path / "oi" / "labels.npy")
    assert set(np.unique(labels)) == {-1.0, 0.0, 1.0} and (labels == 1).sum(1).tolist() == [1] * 12
    splits = registry.load_dataset("openimages").load(tmp_path / "oi", tmp_path, image_size=16)
    observed = observed_labels(splits, "annotated", 1200)
    assert np.array_equal(observed, np.where(labels[:8] == 1, 1, np.where(labels[:8] == 0, -1, 0)))


def test_preparing_twice_gives_the_same_files_and_fingerprint(tmp_path):
    """Preparation is deterministic (no timestamps in splits.npz), so the same download gives the same run keys."""
    voc_tree(tmp_path / "raw")
    first = prepared("voc", tmp_path / "raw", tmp_path / "a", cache_size=16)
    second = prepared("voc", tmp_path / "raw", tmp_path / "b", cache_size=16)
    assert first["files"] == second["files"]
    assert (tmp_path / "a" / "images_16.u8").read_bytes() == (tmp_path / "b" / "images_16.u8").read_bytes()
    with zipfile.ZipFile(tmp_path / "a" / "splits.npz") as archive:
        assert {member.date_time for member in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    voc = registry.load_dataset("voc")
    assert voc.fingerprint(tmp_path / "a", tmp_path) == voc.fingerprint(tmp_path / "b", tmp_path)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o755  # a shared data folder is readable by the team


def test_output_in_a_folder_that_does_not_exist_is_refused(tmp_path, capsys):
    voc_tree(tmp_path / "raw")
    assert main(["data", "prepare", "voc", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "no" / "voc")]) == 2
    assert "that should hold --out does not exist" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_decoded_cache_equals_decoding(tmp_path):
    voc_tree(tmp_path / "raw")
    prepared("voc", tmp_path / "raw", tmp_path / "voc", cache_size=16)
    splits = registry.load_dataset("voc").load(tmp_path / "voc", tmp_path, image_size=16)
    assert splits.train.images.cache is not None
    store = splits.train.images
    cached = store[[2, 0, 1]]
    store.cache = None
    assert cached.shape == (3, 3, 16, 16) and np.array_equal(cached.numpy(), store[[2, 0, 1]].numpy())
    assert [b.shape[0] for b in store.batches(__import__("torch").arange(len(store)), 4)][0] == 4


ERRORS = {
    "missing raw folder": (lambda raw: None, "is missing, not a folder"),
    "missing annotation file": (lambda raw: (raw / "VOCdevkit/VOC2012/ImageSets/Main/dog_train.txt").unlink(),
                                "missing VOC annotation file"),
    "annotation that does not parse": (lambda raw: (raw / "VOCdevkit/VOC2012/ImageSets/Main/cat_val.txt")
                                       .write_text("2008_000500 yes\n"), "cat_val.txt:1: expected"),
    "image listed but absent": (lambda raw: next((raw / "VOCdevkit/VOC2012/JPEGImages").glob("*.jpg")).unlink(),
                                "is listed in the annotations but absent"),
    "truncated image": (lambda raw: [p.write_bytes(p.read_bytes()[:60]) for p in
                                     (raw / "VOCdevkit/VOC2012/JPEGImages").glob("*.jpg")],
                        "is unreadable or truncated"),
}


@pytest.mark.parametrize("case", list(ERRORS))
def test_prepare_errors_name_the_file_and_leave_nothing(case, tmp_path, capsys):
    damage, message = ERRORS[case]
    raw = tmp_path / "raw"
    if case != "missing raw folder":
        voc_tree(raw)
        damage(raw)
    code = main(["data", "prepare", "voc", "--raw", str(raw), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == (["raw"] if case != "missing raw folder" else [])
    assert multiprocessing.active_children() == []  # decoding workers terminated on the error path too


def test_class_count_mismatch(tmp_path, capsys):
    cub_tree(tmp_path / "raw")
    (tmp_path / "raw" / "attributes.txt").write_text("1 has_bill::x\n")
    assert main(["data", "prepare", "cub", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "out")]) == 2
    assert "class-count mismatch" in capsys.readouterr().err
    coco_tree(tmp_path / "coco")
    path = tmp_path / "coco" / "annotations" / "instances_val2014.json"
    data = json.loads(path.read_text())
    data["categories"] = data["categories"][:3]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] in (1, 2, 3)]
    path.write_text(json.dumps(data))
    assert main(["data", "prepare", "coco", "--raw", str(tmp_path / "coco"), "--out", str(tmp_path / "o2")]) == 2
    assert capsys.readouterr().err == ("pamlbench: error: COCO train and val annotation files list different "
                                       "categories: class-count mismatch\n")


def test_malformed_prepared_folder_and_missing_data_option(tmp_path, capsys):
    (tmp_path / "voc").mkdir()
    assert main(["data", "info", "voc", "--data", str(tmp_path / "voc")]) == 2
    assert "is not a prepared voc folder" in capsys.readouterr().err
    assert main(["run", "--method", "an", "--dataset", "voc"]) == 2
    assert "needs --data DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_on_prepared_voc_end_to_end(tmp_path, cache_root):
    voc_tree(tmp_path / "raw", train=40, val=12)
    assert main(["data", "prepare", "voc", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "voc")]) == 0
    done = subprocess.run([sys.executable, "-m", "bench.cli", "bench", "--dataset", "voc", "--data",
                           str(tmp_path / "voc"), "--variants", "an", "ll-r+boostlu", "--seeds", "0", "--set",
                           "backbone=small-cnn", "--set", "image_size=32", "--set", "epochs=2", "--set",
                           "batch_size=8", "--no-tracking", "--jobs", "1", "--results", "results", "--cache",
                           str(tmp_path / "cache")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    # VOC's recipe is each paper's: BoostLU's for ll-r+boostlu; an waits for Cole et al.'s grid study (not run here)
    assert "the cole grid study of an on voc has not run" in done.stdout
    [record] = read_records(tmp_path / "results")
    assert record["variant"] == "ll-r+boostlu" and record["status"] == "done"
    assert record["spec"]["recipe"] == "paper" and record["spec"]["head_lr_mult"] == 10.0
    assert record["image_shape"] == [3, 32, 32] and len(record["per_class_ap"]) == 20
    board = (tmp_path / "results" / "leaderboard-paper.md").read_text()  # the paper recipe's page
    assert "| voc " in board and "| paper" in board  # published VOC numbers appear beside ours
    assert "[paper recipe](results/leaderboard-paper.md)" in (tmp_path / "leaderboard.md").read_text()


def test_fashion_mosaic_from_idx_files(tmp_path):
    import gzip

    from bench.mosaic import read_idx

    rng = np.random.default_rng(0)

    def idx(path, array):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        with gzip.open(path, "wb") as stream:
            stream.write(header + array.astype(np.uint8).tobytes())

    for split, count in (("train", 8200), ("t10k", 2100)):
        idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 255, (count, 28, 28)))
        idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    plugin = registry.load_dataset("fashion-mosaic")
    assert plugin.available(tmp_path) and not plugin.available(tmp_path / "nowhere")
    splits = plugin.load(tmp_path, tmp_path / "cache")
    assert len(splits.train) == 4000 and splits.train.images.shape[1:] == (1, 56, 56)
    first = plugin.fingerprint(tmp_path, tmp_path / "cache")
    assert plugin.fingerprint(tmp_path, tmp_path / "rebuilt") == first  # a build from scratch gives the same data
    idx(tmp_path / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (8200, 28, 28)))  # other pixels, same size
    assert plugin.fingerprint(tmp_path, tmp_path / "cache") != first
    (tmp_path / "bad-idx.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09abc"))
    with pytest.raises(Exception, match="truncated"):
        read_idx(tmp_path / "bad-idx.gz")
