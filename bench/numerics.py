"""What decides a run's floating-point numerics, beyond its RunSpec and code.

Two runs of the same RunSpec and code give bit-identical numbers when their numerics descriptors are equal, and may
differ in the last digits otherwise (which moves test mAP by up to a few points after many epochs, because training
is chaotic). The descriptor therefore enters the run key, and the report never averages runs of different numerics
in one cell: they land in different sections, each titled with its numerics.

- CPU: the device type, the vector instruction set torch dispatches to (`torch.backends.cpu.get_cpu_capability()`:
  DEFAULT, AVX2, AVX512, ...; oneDNN picks its convolution kernels by the same instruction set) and the number of
  intra-op threads (the order of floating-point reductions inside convolutions and batch norm depends on it).
  Seeds, shuffling, augmentation and every random draw are seeded, so nothing else varies on CPU. The CPU model name
  is recorded with every run (not keyed): two models with the same instruction set run the same kernels.
- CUDA: the GPU model, the CUDA and cuDNN versions. CUDA training is not bitwise deterministic (cuDNN's algorithm
  choice, atomic adds in scatter backward, bf16 autocast); records say so in their `determinism` field.
"""

from __future__ import annotations

import platform
from functools import cache
from pathlib import Path
from typing import Any


def numerics(device: str) -> dict[str, Any]:
    """The numerics descriptor of training on `device` ('cpu' or 'cuda') in this process, with its current thread
    count (set `--threads` before calling)."""
    import torch

    if device == "cuda":
        return {"device": "cuda", "gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version()}
    return {"device": "cpu", "isa": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}


def describe(descriptor: dict[str, Any]) -> str:
    """One line, e.g. 'cpu AVX2, 2 threads' or 'cuda NVIDIA H100, CUDA 12.8, cuDNN 91000'."""
    if descriptor.get("device") == "cuda":
        return f"cuda {descriptor['gpu']}, CUDA {descriptor['cuda']}, cuDNN {descriptor['cudnn']}"
    threads = descriptor.get("threads", "?")
    return f"cpu {descriptor.get('isa', '?')}, {threads} thread{'' if threads == 1 else 's'}"


@cache
def cpu_model() -> str:
    """The CPU model name (recorded with every run, not part of the key)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def determinism_note(device: str) -> str:
    """What makes a run on `device` (not) bitwise reproducible."""
    if device == "cpu":
        return "deterministic: same spec, code and numerics (instruction set, thread count), same numbers"
    return ("not bitwise deterministic on CUDA: cuDNN algorithm choice, atomic adds in index/scatter backward "
            "(ROLE's estimates, LL-Cp), bf16 autocast; differences stay within seed noise")
