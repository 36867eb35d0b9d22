"""Observation protocols: which training labels a method is allowed to see.

Encoding of an observed matrix: 1 = observed positive, 0 = unobserved, -1 = observed negative.

`single-positive` reproduces Cole et al.'s `generate_observed_labels.py` bit for bit: a fresh
`np.random.RandomState(seed)`, then for every row in order: shuffle the positive indices and observe the first; shuffle
the negative indices and observe none of them. The second shuffle observes nothing but consumes random numbers, so
it is kept: skipping it would change every later row's draw.

`partial-<fraction>` keeps, for every image, round(fraction * C) labels chosen uniformly (positives and negatives
alike), with at least one label per image; it is the partial-label setting of the large-scale benchmarks.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from bench.errors import UserError

COLE_SEED = 1200
"""The seed of the reference preprocessing."""

def single_positive(labels: np.ndarray, seed: int = COLE_SEED) -> np.ndarray:
    """One observed positive per row, Cole et al.'s generator (num_pos=1, num_neg=0); same dtype as `labels`."""
    rng = np.random.RandomState(seed)
    signed = 2 * labels - 1
    observed = np.zeros_like(labels)
    for row in range(signed.shape[0]):
        positives = np.nonzero(signed[row] == 1)[0]
        rng.shuffle(positives)
        observed[row, positives[:1]] = 1
        negatives = np.nonzero(signed[row] == -1)[0]
        rng.shuffle(negatives)
        observed[row, negatives[:0]] = -1
    return observed


def partial(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Keep round(fraction * C) (at least 1) uniformly chosen labels per row, as +1 / -1; the rest unobserved."""
    rng = np.random.RandomState(seed)
    num_classes = labels.shape[1]
    keep = max(1, round(fraction * num_classes))
    observed = np.zeros(labels.shape, dtype=np.float32)
    for row in range(labels.shape[0]):
        chosen = rng.permutation(num_classes)[:keep]
        observed[row, chosen] = np.where(labels[row, chosen] == 1, 1.0, -1.0)
    return observed


def parse_protocol(protocol: str) -> float | None:
    """None for 'single-positive' and 'annotated' (a dataset's own partial annotations, e.g. OpenImages), the
    fraction for 'partial-<fraction>'; UserError otherwise."""
    if protocol in ("single-positive", "annotated"):
        return None
    match = re.fullmatch(r"partial-(0?\.\d+|1(\.0*)?)", protocol)
    if match and 0 < float(match.group(1)) <= 1:
        return float(match.group(1))
    raise UserError(f"unknown observation protocol {protocol!r}; use single-positive, annotated or "
                    "partial-<fraction in (0,1]>, e.g. partial-0.1")


def observe(labels: np.ndarray, protocol: str, seed: int) -> np.ndarray:
    """The observed matrix (float32) of `labels` under `protocol` with `seed`."""
    fraction = parse_protocol(protocol)
    if protocol == "annotated":
        raise UserError("protocol 'annotated' needs a dataset with its own partial annotations (e.g. openimages)")
    if fraction is None:
        return single_positive(labels, seed).astype(np.float32)
    return partial(labels, fraction, seed)


def checksum(observed: np.ndarray) -> str:
    """Short SHA-256 of an observed matrix (shape and values as int8), recorded with every run."""
    digest = hashlib.sha256(str(observed.shape).encode())
    digest.update(np.ascontiguousarray(observed.round().astype(np.int8)).tobytes())
    return digest.hexdigest()[:16]
