"""A throwaway Ray cluster on this machine, for the tests and `make perf`: a head and worker nodes, each a real
`ray start` process tree, inside a private network namespace where only 127.0.0.1 exists, so that no Ray service
binds or talks to any other address. Commands that talk to it (a `pamlbench --cluster` driver) run in the same
namespace (`nsenter`). `stop()` kills exactly the processes the cluster started (never `ray stop`, which would stop
every Ray instance of the machine). Needs root (or the right to make network namespaces).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAD_PORT = 6379
WORKER_NODE_MANAGER_PORT = 6391
RAY = Path(sys.executable).with_name("ray")


def namespace_available() -> str | None:
    """Why a private network namespace cannot be made here, or None."""
    missing = [tool for tool in ("unshare", "nsenter", "ip") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (util-linux, iproute2)"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare --net is not permitted here ({probe.stderr.strip()})"


class RayCluster:
    """A head and `nodes - 1` worker nodes of `cpus` CPUs each, started with `ray start` in a network namespace
    held by the process `holder`. With `nodes=0` no node is started: a `--cluster auto` driver run in the namespace
    starts its own Ray instance there (under `temp_dir`, through RAY_TMPDIR)."""

    def __init__(self, nodes: int = 2, cpus: int = 1) -> None:
        self.temp_dir = Path(tempfile.mkdtemp(prefix="pray", dir="/tmp"))  # Ray's socket paths must fit 107 bytes
        self.cpus = cpus
        self.nodes = 0
        self.holder = subprocess.Popen(["unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep 3600"])
        self.address = f"127.0.0.1:{HEAD_PORT}"
        # HOME: Ray keeps state there (a new local instance writes ~/.ray/auth_token, and `ray start` then turns
        # token authentication on); RAY_TMPDIR: where a `--cluster auto` driver's own instance keeps its sessions,
        # so that its processes name this folder too.
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1", HOME=str(self.temp_dir),
                        RAY_TMPDIR=str(self.temp_dir))
        for _ in range(50):
            if "UP" in self.run(["ip", "-o", "link", "show", "lo"]).stdout:
                break
            time.sleep(0.1)
        try:
            if nodes > 0:
                self.start(["--head", "--port", str(HEAD_PORT), "--include-dashboard", "false"])
            for _ in range(nodes - 1):
                self.add_node()
        except BaseException:
            self.stop()
            raise

    def add_node(self) -> None:
        """Start one more worker node (its node manager listens on WORKER_NODE_MANAGER_PORT + its number - 1)."""
        self.start(["--address", self.address, "--node-manager-port",
                    str(WORKER_NODE_MANAGER_PORT + self.nodes - 1)])

    def prefix(self) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net"]

    def run(self, command: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.prefix() + command, capture_output=True, text=True, env=self.env, **kwargs)

    def popen(self, command: list[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.prefix() + command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env, **kwargs)

    def start(self, options: list[str]) -> None:
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", str(self.cpus), "--num-gpus", "0", "--temp-dir",
                  str(self.temp_dir), "--disable-usage-stats"]
        started = self.run([str(RAY), "start", *options, *common], timeout=120)
        if started.returncode != 0:
            raise RuntimeError(f"ray start failed: {(started.stdout + started.stderr).strip()[-2000:]}")
        self.nodes += 1

    def pamlbench(self, *args: str, cwd: Path) -> subprocess.Popen:
        return self.popen([sys.executable, "-m", "bench.cli", *args], cwd=cwd)

    def processes(self) -> list[int]:
        """Every process of this cluster: those naming its temp dir, and their descendants."""
        roots = [pid for pid, command in all_processes().items() if str(self.temp_dir) in command]
        return roots + [child for pid in roots for child in descendants(pid)]

    def worker_node_processes(self, number: int = 1) -> list[int]:
        """Worker node `number`'s raylet and every process it started (its task workers and agents)."""
        port = WORKER_NODE_MANAGER_PORT + number - 1
        raylets = [pid for pid, command in all_processes().items() if str(self.temp_dir) in command
                   and "/raylet " in command and f"--node_manager_port={port}" in command]
        return raylets + [child for pid in raylets for child in descendants(pid)]

    def stop(self) -> None:
        for pid in self.processes():
            kill(pid)
        self.holder.kill()
        self.holder.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def all_processes() -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
    return found


def descendants(pid: int) -> list[int]:
    try:
        children = [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return children + [grandchild for child in children for grandchild in descendants(child)]


def kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


