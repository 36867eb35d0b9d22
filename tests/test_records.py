"""Reading a run record: a valid one comes back as written; anything else in the results folder is one clear error
naming the file, whatever its size, encoding, nesting or shape."""

import json
import os

import pytest
from test_report import record

from bench.errors import UserError
from bench.records import MAX_RECORD_BYTES, read_record, read_records


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
