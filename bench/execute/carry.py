"""`pamlbench records carry`: keep the records of a results folder across a change of code that changes no number.

The run key holds the code version, a hash of the source that can change a result, so any edit of that source (a
comment, a moved function) makes every record stale. The carry proves the edit changed nothing, on a sample:

1. The stale records are those whose code version is not the one today's code keys their cells with. They are
   grouped by everything but their seed (dataset, variant, recipe, protocol, label seed, backbone, epochs); one
   record of each group is re-trained, its seed rotated over the groups so that every seed is drawn (`--all`:
   every record).
2. Each sampled cell is re-trained under today's code at the record's own thread count, in a scratch folder, and
   every number of the new record is compared with the stored one, bit for bit: the curve, the per-class AP, the
   selections, the headline results, the label checksum. Timings and provenance are not compared.
3. If every one agrees, one entry is appended to the ledger (`bench.execute.ledger`): today's code versions map to the
   stored ones on the records' numerics, and from then on the report and `bench` take the stored records as
   today's. If one differs, the first cell and field that differ are named, nothing is written, and the command
   exits non-zero.

What a sample proves: that the new code gives the same numbers on every sampled cell, which covers every method,
BoostLU mode, dataset and recipe of the records, and every seed. It does not prove that no other cell would differ:
a change whose effect depends on the seed or on a hyperparameter value that no sampled cell uses would pass. `--all`
closes that gap at the cost of a full regeneration.
"""

from __future__ import annotations

import datetime
import json
import math
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.errors import UserError, quoted
from bench.execute.identity import plugin_code_version
from bench.execute.ledger import LEDGER_FORMAT, append_entry
from bench.execute.workspace import Workspace
from bench.records import read_records
from bench.spec import RunSpec
from bench.versions import git_commit

NOT_COMPARED = frozenset({"finished_at", "train_seconds", "peak_memory_mb", "git_commit", "cpu_model", "versions",
                          "code_version", "code_version_trained", "hparam_source"})
"""Record fields that are timings or provenance, not numbers of the run: the carry does not compare them."""
STRATUM = ("dataset", "method", "boostlu_train", "boostlu_infer", "linear_init", "recipe", "protocol", "label_seed",
           "backbone", "freeze_backbone", "epochs", "data_dir", "weights")
"""The spec fields a sample covers every value combination of (everything a record's cell has but its seed and
hyperparameter values)."""


def stale_records(records: list[dict[str, Any]], workspace: Workspace) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(the records whose code version is not today's, {today's version: the stored version it would carry}).
    UserError when one of today's versions would carry two stored versions (carry them one state at a time)."""
    ledger = workspace.ledger()
    stale, versions = [], {}
    for record in records:
        today = plugin_code_version(record["spec"]["method"], record["spec"]["dataset"])
        if record["code_version"] == ledger.resolve(today, record["numerics"]):
            continue
        stored = versions.setdefault(today, record["code_version"])
        if stored != record["code_version"]:
            raise UserError(f"records of two code versions ({stored}, {record['code_version']}) would both be "
                            f"carried to today's {today}: keep the records of one of them in {workspace.results}")
        stale.append(record)
    return stale, versions


def sample(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per stratum (`STRATUM`), strata in a fixed order; the i-th stratum gives the record of its i-th
    seed in sorted order (cyclically), so that successive strata draw successive seeds and every seed is drawn."""
    strata: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        strata[tuple(json.dumps(record["spec"].get(name), sort_keys=True) for name in STRATUM)].append(record)
    chosen = []
    for index, stratum in enumerate(sorted(strata)):
        members = sorted(strata[stratum], key=lambda record: (record["spec"]["seed"], record["run_key"]))
        chosen.append(members[index % len(members)])
    return chosen


def first_difference(stored: Any, new: Any, where: str = "") -> str | None:
    """The path of the first value that differs between `stored` and `new` (JSON values; dict keys in sorted order,
    floats compared exactly, a NaN equal to a NaN) as 'field: stored ..., now ...', or None when they are equal."""
    if isinstance(stored, dict) and isinstance(new, dict):
        for name in sorted(set(stored) | set(new)):
            if name not in stored or name not in new:
                return f"{where}{name}: {'missing' if name not in stored else 'present'} in the record, " \
                       f"{'missing' if name not in new else 'present'} now"
            found = first_difference(stored[name], new[name], f"{where}{name}.")
            if found:
                return found
        return None
    if isinstance(stored, list) and isinstance(new, list):
        if len(stored) != len(new):
            return f"{where.rstrip('.')}: {len(stored)} entries in the record, {len(new)} now"
        for index, (left, right) in enumerate(zip(stored, new, strict=True)):
            found = first_difference(left, right, f"{where.rstrip('.')}[{index}].")
            if found:
                return found
        return None
    both_nan = isinstance(stored, float) and isinstance(new, float) and math.isnan(stored) and math.isnan(new)
    if type(stored) is not type(new) or (stored != new and not both_nan):
        return f"{where.rstrip('.')}: {stored!r} in the record, {new!r} now"
    return None


def compared(record: dict[str, Any]) -> dict[str, Any]:
    """The fields of a record the carry compares."""
    return {name: value for name, value in record.items() if name not in NOT_COMPARED}


def retrain(spec_fields: dict[str, Any], stored_version: str, stored_key: str, threads: int, hparam_source: dict,
            data_cache: str) -> dict[str, Any]:
    """Train the record's cell again under today's code, at `threads` torch threads, in a scratch checkpoint folder;
    keyed with the stored code version (which its key must then reproduce). Returns {'record': the new record as
    JSON gives it back} or {'mismatch': why this machine cannot re-train the cell} (runs in a worker process)."""
    import torch

    from bench.execute.identity import run_identity
    from bench.execute.ledger import NO_CARRY
    from bench.execute.runner import train_record

    torch.set_num_threads(threads)
    spec = RunSpec.from_dict(spec_fields)
    identity = {**run_identity(spec, Path(data_cache), NO_CARRY), "code_version": stored_version}
    key = spec.key(identity)
    if key != stored_key:
        return {"mismatch": f"this machine keys it {key}: its data, torch version or numerics differ from the "
                            f"record's ({identity['numerics']}, torch {identity['torch']})"}
    with tempfile.TemporaryDirectory(prefix="pamlbench-carry-") as scratch:
        record = train_record(spec, key, identity, hparam_source, data_cache=Path(data_cache),
                              checkpoint_dir=Path(scratch), progress=False)
    return {"record": json.loads(json.dumps(record, default=str))}


def cell_name(record: dict[str, Any]) -> str:
    spec = record["spec"]
    return (f"{spec['dataset']} {record['variant']} seed {spec['seed']} ({spec.get('recipe', 'defaults')} recipe, "
            f"record {record['run_key']})")


def carry(workspace: Workspace, *, check_all: bool, jobs: int) -> dict[str, Any]:
    """Carry the stale records of `workspace.results` to today's code (see the module docstring) and return the
    ledger entry written, or None when every record is current. UserError when a re-trained cell differs (naming
    the first cell and field) or cannot be re-trained here; nothing is written then."""
    from tqdm import tqdm

    from bench.execute.workers import WorkerPlan, run_tasks

    records = read_records(workspace.results)
    stale, versions = stale_records(records, workspace)
    if not stale:
        return None
    workspace.check_writable()
    chosen = sorted(stale, key=lambda r: r["run_key"]) if check_all else sample(stale)
    by_threads: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for record in chosen:
        if record["numerics"].get("device") != "cpu":
            raise UserError(f"{cell_name(record)} was trained on {record['numerics'].get('device')!r}: only CPU "
                            "records are bit-for-bit reproducible, so only they can be carried")
        by_threads[int(record["numerics"].get("threads", 1))].append(record)
    results: dict[str, dict[str, Any]] = {}
    by_key = {record["run_key"]: record for record in chosen}
    with tqdm(total=len(chosen), desc="carry", unit="cell", dynamic_ncols=True, disable=not sys.stderr.isatty()) as bar:
        for threads, group in sorted(by_threads.items()):
            tasks = [(r["spec"], r["code_version"], r["run_key"], threads, r.get("hparam_source", {}),
                      str(workspace.data_cache)) for r in group]

            def finished(task: tuple[Any, ...], result: dict[str, Any]) -> None:
                results[task[2]] = result
                bar.update()
                bar.write(f"[{len(results)}/{len(chosen)}] re-trained {cell_name(by_key[task[2]])}", file=sys.stdout)
                sys.stdout.flush()

            left = run_tasks(tasks, retrain, WorkerPlan(max(1, jobs), threads), on_result=finished,
                             on_broken=lambda unfinished: None)
            if left:
                raise UserError(f"records carry: worker processes kept dying; {len(left)} cell(s) not re-trained, "
                                "nothing carried")
    for record in chosen:
        result = results[record["run_key"]]
        if "mismatch" in result:
            raise UserError(f"records carry: cannot re-train {cell_name(record)} here: {result['mismatch']}; "
                            "nothing carried")
        difference = first_difference(compared(record), compared(result["record"]))
        if difference:
            raise UserError(f"records carry: {cell_name(record)} differs under today's code: {difference}; "
                            "nothing carried (the change changes numbers: regenerate the records)")
    numerics = []
    for record in stale:
        if record["numerics"] not in numerics:
            numerics.append(record["numerics"])
    entry = {"format": LEDGER_FORMAT, "git_commit": git_commit(),
             "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "versions": versions,
             "numerics": numerics, "sampled": [record["run_key"] for record in chosen], "records": len(stale),
             "all": check_all}
    append_entry(workspace.results, entry)
    return entry


def describe_entry(entry: dict[str, Any], workspace: Workspace) -> str:
    """The line `records carry` prints after a carry."""
    pairs = ", ".join(f"{stored} -> {today}" for today, stored in sorted(entry["versions"].items()))
    return (f"records carry: {entry['records']} record(s) carried ({pairs}): {len(entry['sampled'])} re-trained "
            f"cell(s) agree bit for bit; ledger {quoted(workspace.results / 'carry-ledger.jsonl')}")
