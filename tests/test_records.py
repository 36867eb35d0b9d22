"""Run records on disk: a valid one is read back as written, anything else in the results folder is one clear error
naming the file, and a write is atomic (a hidden file of the same folder, mode 0644, renamed; a failed write leaves
the old file and no partial one)."""

import json
import os
import stat

import pytest
from test_report import record

from bench.errors import UserError
from bench.records import MAX_RECORD_BYTES, atomic_write, read_record, read_records, write_record


def test_a_valid_record_comes_back_as_written_and_records_in_key_order(tmp_path):
    written = [record("an", seed, 80.0 + seed) for seed in (2, 0, 1)]
    for entry in written:
        (tmp_path / f"{entry['run_key']}.json").write_text(json.dumps(entry))
    assert read_record(tmp_path / f"{written[0]['run_key']}.json") == written[0]
    assert [r["run_key"] for r in read_records(tmp_path)] == sorted(r["run_key"] for r in written)
    assert read_records(tmp_path / "missing") == []


def test_a_record_may_be_as_large_as_the_limit_and_no_larger(tmp_path):
    entry = record("an", 0, 80.0)
    text = json.dumps(entry)
    path = tmp_path / "large.json"
    path.write_text(text + " " * (MAX_RECORD_BYTES - len(text)))        # exactly the limit: still read
    assert os.path.getsize(path) == MAX_RECORD_BYTES and read_record(path) == entry
    path.write_text(text + " " * (MAX_RECORD_BYTES - len(text) + 1))
    with pytest.raises(UserError, match=f"^results file {path} is over 64 MiB, not a run record; remove it$"):
        read_record(path)


@pytest.mark.parametrize("content, message", [
    (b"{not json", "corrupt results file {path}: Expecting property name enclosed in double quotes: line 1 column 2 "
                   "(char 1); delete it to re-run that cell"),
    (b"\xff\xfe", "corrupt results file {path}: 'utf-8' codec can't decode byte 0xff in position 0: invalid start "
                  "byte; delete it to re-run that cell"),
    (b"[" * 100000 + b"]" * 100000, "corrupt results file {path}: nested too deeply to be a run record; delete it"),
    (b'{"status": "done"}', "corrupt results file {path}: "),
])
def test_anything_else_is_one_error_naming_the_file(content, message, tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(UserError) as raised:
        read_record(path)
    assert str(raised.value).startswith(message.format(path=path)) and "\n" not in str(raised.value)


def test_a_folder_in_the_results_is_not_a_record(tmp_path):
    (tmp_path / "odd.json").mkdir()
    with pytest.raises(UserError, match=f"^results entry {tmp_path / 'odd.json'} is not a regular file; remove it "
                                        "from the results folder$"):
        read_records(tmp_path)


def test_a_write_goes_through_a_hidden_file_of_the_same_folder_and_leaves_mode_644(tmp_path, monkeypatch):
    target = tmp_path / "results" / "key.json"                     # the folder is made if missing
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda source, destination: (renamed.append(source),
                                                                    real_replace(source, destination)))
    old = os.umask(0o077)                                          # a strict umask: the mode is still 0644
    try:
        atomic_write(target, b"first")
    finally:
        os.umask(old)
    (source,) = renamed
    assert os.path.dirname(source) == str(target.parent)           # a rename within one file system is atomic
    assert os.path.basename(source).startswith(".key.json.") and source.endswith(".tmp")
    assert target.read_bytes() == b"first" and stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["key.json"]


@pytest.mark.parametrize("failure", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_write_leaves_the_old_file_and_no_partial_one(failure, tmp_path, monkeypatch):
    target = tmp_path / "key.json"
    target.write_bytes(b"finished result")

    def fail(source, destination):
        raise failure

    monkeypatch.setattr(os, "replace", fail)
    expected = (pytest.raises(UserError, match=f"^cannot write {target}: No space left on device$")
                if isinstance(failure, OSError) else pytest.raises(KeyboardInterrupt))
    with expected:
        atomic_write(target, b"new")
    assert target.read_bytes() == b"finished result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.json"]


def test_a_folder_that_cannot_be_made_is_one_error(tmp_path):
    (tmp_path / "results").write_text("a file where the folder should be")
    target = tmp_path / "results" / "key.json"
    with pytest.raises(UserError, match=f"^cannot write {target}: File exists$"):
        atomic_write(target, b"new")


def test_a_record_is_written_as_sorted_indented_json_under_its_key_and_only_if_valid(tmp_path):
    entry = record("an", 0, 80.0)
    path = write_record(tmp_path / "results", entry)
    assert path == tmp_path / "results" / f"{entry['run_key']}.json"
    assert path.read_text() == json.dumps(entry, indent=1, sort_keys=True) + "\n"
    assert read_record(path) == entry
    broken = {**entry, "run_key": "0123456789abcdef", "test_map": "high"}
    with pytest.raises(ValueError, match=r"^record '0123456789abcdef' is not a valid run record \(.*test_map.*\); "
                                         "nothing written$"):
        write_record(tmp_path / "results", broken)
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [path.name]
