"""The cluster paths that a two-node test cluster cannot reach on demand, tested without Ray: the GPU share of a
cell, a node of other numerics refusing a cell, and a task lost for good (its claim is given back)."""

from __future__ import annotations

import dataclasses

import pytest

from bench.execute.claims import ClaimStore
from bench.execute.cluster import EMBEDDED_GPU_SHARE, TaskOptions, settle, train_cell
from bench.records import read_records
from bench.spec import make_spec


def test_gpu_share_of_a_cell():
    embedded = make_spec("digits-mosaic", "an", 0)
    on_gpu = dataclasses.replace(embedded, device="cuda")
    prepared = dataclasses.replace(on_gpu, data_dir="/data/voc")
    assert TaskOptions().gpus_for(embedded) == 0  # a CPU cell asks for no GPU
    assert TaskOptions().gpus_for(on_gpu) == EMBEDDED_GPU_SHARE  # small built-in cells share a GPU
    assert TaskOptions().gpus_for(prepared) == 1.0  # a prepared dataset's cell takes a whole one
    assert TaskOptions(gpus=0.5).gpus_for(prepared) == 0.5 and TaskOptions(gpus=0.5).gpus_for(embedded) == 0


def test_a_node_whose_key_differs_refuses_the_cell_without_training(tmp_path):
    spec = make_spec("digits-mosaic", "an", 0, overrides={"epochs": 1})
    options = TaskOptions(threads=1, worker_cache=str(tmp_path / "worker"))
    returned = train_cell(spec.to_dict(), {"kind": "defaults"}, "0" * 16, options)
    assert set(returned) == {"mismatch"}
    assert "keys this cell" in returned["mismatch"] and "numerics, torch or code differ" in returned["mismatch"]
    assert not (tmp_path / "worker" / "checkpoints").exists()  # nothing was trained


@pytest.mark.parametrize("returned", [{"lost": "the worker died 4 times"}, {"mismatch": "node b keys it x"}])
def test_a_lost_or_refused_cell_gives_its_claim_back_and_writes_nothing(returned, workspace):
    spec = make_spec("digits-mosaic", "an", 0)
    claims = ClaimStore(workspace.claims_url())
    workspace.ensure_writable()
    assert claims.claim("k" * 16)
    outcome = settle(returned, spec, "k" * 16, workspace, claims, None)
    assert outcome.state == "lost" and outcome.record["error"] == next(iter(returned.values()))
    assert ClaimStore(workspace.claims_url()).claim("k" * 16)  # free at once for the next command
    assert read_records(workspace.results) == []


def test_a_returned_record_is_committed_with_its_weights(workspace, tmp_path):
    from bench.execute.runner import train_record

    spec = make_spec("digits-mosaic", "an", 0, overrides={"epochs": 1})
    identity = spec.identity(workspace.data_cache)
    key = spec.key(identity)
    record = train_record(spec, key, identity, {"kind": "defaults"}, data_cache=workspace.data_cache,
                          checkpoint_dir=tmp_path / "worker-checkpoints", progress=False)
    claims = ClaimStore(workspace.claims_url())
    workspace.ensure_writable()
    assert claims.claim(key)
    outcome = settle({"record": record, "weights": b"weights"}, spec, key, workspace, claims, None)
    assert outcome.state == "trained"
    assert read_records(workspace.results) == [record]
    assert (workspace.checkpoints / f"{key}.pt").read_bytes() == b"weights"
    assert claims.done_record(key) == record
