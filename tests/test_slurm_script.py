"""cluster/slurm.sbatch: valid bash, and on a (simulated) three-node allocation it starts the Ray head on the first
node, a worker node on each other node, and runs pamlbench with --cluster pointing at the head.

No SLURM here: `scontrol`, `srun`, `ray` and `pamlbench` are stand-ins on PATH that log how they were called. They
behave like the real ones in what the order depends on: the head takes a moment to come up and `ray status` fails
until it has; the driver's stand-in waits (bounded) until every worker node has been started, as a real driver's
tasks wait for resources, so that the background `srun` calls are in the log before the script's EXIT trap ends
them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "cluster" / "slurm.sbatch"

STAND_INS = {
    "scontrol": 'echo "scontrol $*" >> "$LOG"; [ "$1 $2" = "show hostnames" ] && printf "node1\\nnode2\\nnode3\\n"',
    # the head needs a moment before it is up; a worker or an IP query answers at once
    "srun": 'case "$*" in *"--head"*) sleep 0.3;; esac; echo "srun $*" >> "$LOG"; '
            'case "$*" in *"hostname --ip-address"*) echo "127.0.0.1 ::1";; esac',
    # `ray status` succeeds only once the head has started
    "ray": 'echo "ray $*" >> "$LOG"; [ "$1" != status ] || grep -q "ray start --head" "$LOG"',
    # the driver waits (at most 20 s) until both worker nodes were started
    "pamlbench": 'for _ in $(seq 200); do [ "$(grep -c "ray start --address" "$LOG")" -ge 2 ] && break; '
                 'sleep 0.1; done; echo "pamlbench $*" >> "$LOG"',
}


def test_sbatch_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0


def run_script(tmp_path: Path, *args: str) -> list[str]:
    stand_ins = tmp_path / "bin"
    stand_ins.mkdir()
    for name, body in STAND_INS.items():
        (stand_ins / name).write_text(f"#!/bin/bash\n{body}\n")
        (stand_ins / name).chmod(0o755)
    log = tmp_path / "calls.log"
    env = dict(os.environ, PATH=f"{stand_ins}:{os.environ['PATH']}", LOG=str(log), SLURM_JOB_NODELIST="node[1-3]",
               VENV=str(tmp_path / "no-venv"))
    done = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return log.read_text().splitlines()


def test_sbatch_script_starts_head_then_workers_then_the_driver(tmp_path):
    calls = run_script(tmp_path, "bench", "--dataset", "voc", "--data", "/shared/voc")
    head = [i for i, c in enumerate(calls) if "ray start --head" in c]
    workers = [i for i, c in enumerate(calls) if "ray start --address=127.0.0.1:6379" in c]
    driver = [i for i, c in enumerate(calls) if c.startswith("pamlbench")]
    assert len(head) == 1 and "-w node1" in calls[head[0]] and "--node-ip-address=127.0.0.1" in calls[head[0]]
    assert sorted(calls[i].split("-w ")[1].split()[0] for i in workers) == ["node2", "node3"]
    assert [calls[i] for i in driver] == ["pamlbench bench --dataset voc --data /shared/voc --cluster 127.0.0.1:6379"]
    assert head[0] < min(workers) and max(workers) < driver[0], calls


def test_sbatch_script_runs_bench_when_given_no_arguments(tmp_path):
    calls = run_script(tmp_path)
    assert [c for c in calls if c.startswith("pamlbench")] == ["pamlbench bench --cluster 127.0.0.1:6379"]
