"""Checks, before a command writes anything, that every run's backbone weights (`--weights`) can be used.

The model (`bench.model.build_backbone`) is the one that loads weights, and it refuses what it cannot use: weights
for the small CNN, which has none to load, a file that `torch.load` cannot read safely, or torchvision's ImageNet
file missing from this machine. It does so when a run builds its model, after the command has opened its claims
store. `check_backbone_weights` builds each distinct (backbone, weights) pair of a command's runs once, through that
same function, so that a bad `--weights` is one line and exit status 2 with nothing written, for `--plan` too.
"""

from __future__ import annotations

from collections.abc import Iterable

from bench.errors import UserError, first_line
from bench.spec import RunSpec

NO_WEIGHTS = (None, "none")
"""`RunSpec.weights` values that load nothing (a seeded random initialisation)."""


def check_backbone_weights(specs: Iterable[RunSpec], *, imagenet_here: bool = True) -> None:
    """UserError (one line) for the first (backbone, weights) pair of `specs` that the model cannot build: weights
    for a backbone without pretrained ones, a weights file that torch cannot load with `weights_only=True`, or one
    whose tensors do not fit the backbone. With `imagenet_here` False (a cluster's driver, whose nodes hold the
    files, or a plan, which may be made on another machine than the one that trains) 'imagenet' is not loaded here;
    a file given by path must be here anyway, as its checksum is in the key."""
    from bench.model import build_backbone

    pairs = {(spec.backbone, spec.weights) for spec in specs if spec.weights not in NO_WEIGHTS}
    for backbone, weights in sorted(pairs):
        if weights == "imagenet" and not imagenet_here and backbone != "small-cnn":
            continue
        try:
            build_backbone(backbone, 3, weights)
        except UserError as error:
            if str(error).startswith("cannot read weights file"):  # torch's reason runs over several lines
                raise UserError(f"weights file {weights} is not a state dict that torch.load reads with "
                                f"weights_only=True; save one with torch.save(model.state_dict(), path)") from None
            raise UserError(first_line(error)) from None
        except RuntimeError:  # load_state_dict: the keys or shapes of another network
            raise UserError(f"weights file {weights} does not fit the {backbone} backbone: the names or shapes of "
                            "its tensors differ from the backbone's") from None
