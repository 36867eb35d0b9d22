"""cluster/slurm.sbatch: valid bash, and on a (simulated) three-node allocation it starts the Ray head on the first
node, a worker node on each other node, and runs pamlbench with --cluster pointing at the head.

No SLURM here: `scontrol`, `srun`, `ray` and `pamlbench` are stand-ins on PATH that log how they were called."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "cluster" / "slurm.sbatch"

STAND_INS = {
    "scontrol": 'echo "scontrol $*" >> "$LOG"; [ "$1 $2" = "show hostnames" ] && printf "node1\\nnode2\\nnode3\\n"',
    "srun": 'echo "srun $*" >> "$LOG"; case "$*" in *"hostname --ip-address"*) echo "127.0.0.1 ::1";; esac',
    "ray": 'echo "ray $*" >> "$LOG"',
    "pamlbench": 'echo "pamlbench $*" >> "$LOG"',
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
    head = [c for c in calls if "ray start --head" in c]
    workers = [c for c in calls if "ray start --address=127.0.0.1:6379" in c]
    assert len(head) == 1 and "-w node1" in head[0] and "--node-ip-address=127.0.0.1" in head[0]
    assert sorted(c.split("-w ")[1].split()[0] for c in workers) == ["node2", "node3"]
    assert [c for c in calls if c.startswith("pamlbench")] == [
        "pamlbench bench --dataset voc --data /shared/voc --cluster 127.0.0.1:6379"]


def test_sbatch_script_runs_bench_when_given_no_arguments(tmp_path):
    calls = run_script(tmp_path)
    assert [c for c in calls if c.startswith("pamlbench")] == ["pamlbench bench --cluster 127.0.0.1:6379"]
