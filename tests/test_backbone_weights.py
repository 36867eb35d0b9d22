"""`check_backbone_weights`: the up-front check of `--weights` that `run`, `bench` and `tune` make before writing
anything (the refusals themselves, as a user meets them, are cases of test_hostile_input.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torchvision import models

from bench.cli.backbone_weights import check_backbone_weights
from bench.errors import UserError
from bench.spec import make_spec

SMALL = make_spec("digits-mosaic", "an", 0)
RESNET = make_spec("digits-mosaic", "an", 0, overrides={"backbone": "resnet50"})


@pytest.fixture
def no_imagenet_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


def test_a_state_dict_of_the_backbone_and_no_weights_at_all_pass(tmp_path):
    weights = tmp_path / "resnet50.pth"
    torch.save(models.resnet50(weights=None).state_dict(), weights)
    check_backbone_weights([RESNET, dataclasses.replace(RESNET, weights=str(weights)), SMALL,
                            dataclasses.replace(SMALL, weights="none")])


def test_a_cluster_driver_leaves_imagenet_to_its_nodes_but_still_refuses_it_for_the_small_cnn(no_imagenet_file):
    imagenet = dataclasses.replace(RESNET, weights="imagenet")
    with pytest.raises(UserError, match="ImageNet weights for resnet50 are not on this machine"):
        check_backbone_weights([imagenet])
    check_backbone_weights([imagenet], imagenet_here=False)
    with pytest.raises(UserError, match="the small-cnn backbone has no pretrained weights"):
        check_backbone_weights([dataclasses.replace(SMALL, weights="imagenet")], imagenet_here=False)


def test_each_backbone_and_weights_pair_is_built_once(tmp_path, monkeypatch):
    import bench.model

    built = []
    real = bench.model.build_backbone
    monkeypatch.setattr(bench.model, "build_backbone", lambda *args: built.append(args) or real(*args))
    weights = tmp_path / "resnet50.pth"
    torch.save(models.resnet50(weights=None).state_dict(), weights)
    specs = [dataclasses.replace(RESNET, seed=seed, weights=str(weights)) for seed in range(3)]
    check_backbone_weights(specs + [dataclasses.replace(SMALL, seed=seed) for seed in range(3)])
    assert built == [("resnet50", 3, str(weights))]
