"""The model: backbone -> 1x1-conv CAM head -> [BoostLU] -> global average pooling -> logits.

BoostLU (Kim et al., CVPR'23, "Bridging the Gap between Model Explanations in Partially Annotated Multi-label
Classification") multiplies positive class-activation-map cells by alpha and leaves the others unchanged:
CAM' = alpha * CAM where CAM > 0, CAM where CAM <= 0 (the identity branch at exactly 0). This equals the paper's
max(x, alpha x) only for alpha >= 1, which is why `boost_alpha` is declared >= 1. The bias of the 1x1 conv is
*inside* the boost, as in the reference code (the BoostLU repository's `models.py`). With alpha = 1 the head equals
Linear(GAP(features)), with the same default initialisation (fan_in = feature channels), so "BoostLU at inference
only" on a model trained without it is exactly the paper's setting.

BoostLU can be on in training, in inference (validation and test), or both: `boostlu_train` / `boostlu_infer`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bench.errors import UserError

BACKBONES = ("small-cnn", "resnet50", "resnet101")


def boostlu(cam: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * cam where cam > 0, cam elsewhere."""
    return torch.where(cam > 0, cam * alpha, cam)


class SmallCNN(nn.Sequential):
    """A CPU-sized backbone: four conv-BN-ReLU stages (5x5 stride 2, then three 3x3 with strides 2, 2, 1), output
    stride 8, 64 channels.

    For 56x56 digit mosaics the feature map is 7x7 (one 28-px digit cell = a 3.5x3.5 block of CAM cells) and the
    receptive field (33 px) covers a whole digit. The last stage runs at stride 1 on the 7x7 map, where it is cheap.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...] = (16, 32, 64, 64)) -> None:
        layers: list[nn.Module] = []
        strides = (2, 2, 2, 1)
        kernels = (5, 3, 3, 3)
        channels = in_channels
        for width, stride, kernel in zip(widths, strides, kernels, strict=True):
            layers += [nn.Conv2d(channels, width, kernel, stride, kernel // 2, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        super().__init__(*layers)
        self.out_channels = channels


class ResNetFeatures(nn.Module):
    """torchvision ResNet-50/101 up to layer4 (2048 channels, output stride 32).

    weights: None or "none" (random init), "imagenet" (torchvision's IMAGENET1K_V1 weights from the local torch
    cache; never downloaded at run time: a missing file is a UserError naming the file and the folder), or a path to
    a local state-dict file. Grey images are repeated to 3 channels.
    """

    def __init__(self, depth: int, in_channels: int, weights: str | None = None) -> None:
        super().__init__()
        from torchvision import models

        builder = {50: models.resnet50, 101: models.resnet101}[depth]
        net = builder(weights=None)
        if weights not in (None, "none"):
            net.load_state_dict(load_resnet_weights(depth, weights))
        self.in_channels = in_channels
        self.body = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                                  net.layer4)
        self.out_channels = 2048

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 1:
            images = images.expand(-1, 3, -1, -1)
        return self.body(images)


def load_resnet_weights(depth: int, weights: str) -> dict[str, torch.Tensor]:
    """ImageNet weights for ResNet-`depth` from a local file (weights_only load, no download)."""
    from torchvision import models

    if weights == "imagenet":
        enum = {50: models.ResNet50_Weights, 101: models.ResNet101_Weights}[depth].IMAGENET1K_V1
        file_name = enum.url.rsplit("/", 1)[-1]
        path = Path(torch.hub.get_dir()) / "checkpoints" / file_name
        if not path.exists():
            raise UserError(f"ImageNet weights for resnet{depth} are not on this machine: download {enum.url} to "
                            f"{path} (or pass --weights PATH)")
    else:
        path = Path(weights)
        if not path.exists():
            raise UserError(f"weights file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"cannot read weights file {path}: {error}") from None


def build_backbone(name: str, in_channels: int, weights: str | None = None) -> nn.Module:
    """The backbone called `name` (one of BACKBONES); its `out_channels` is the feature depth."""
    if name == "small-cnn":
        if weights not in (None, "none"):
            raise UserError("the small-cnn backbone has no pretrained weights; drop --weights")
        return SmallCNN(in_channels)
    if name in ("resnet50", "resnet101"):
        return ResNetFeatures(int(name[6:]), in_channels, weights)
    raise UserError(f"unknown backbone {name!r}; known backbones: {', '.join(BACKBONES)}")


class CamClassifier(nn.Module):
    """backbone -> 1x1 conv (with bias) -> BoostLU where enabled for the current mode -> spatial mean."""

    def __init__(self, backbone: nn.Module, num_classes: int, *, boost_alpha: float | None = None,
                 boostlu_train: bool = False, boostlu_infer: bool = False) -> None:
        super().__init__()
        if (boostlu_train or boostlu_infer) and boost_alpha is None:
            raise ValueError("BoostLU is on but no boost_alpha was given")
        self.backbone = backbone
        self.cam_head = nn.Conv2d(backbone.out_channels, num_classes, kernel_size=1, bias=True)
        self.boost_alpha = boost_alpha
        self.boostlu_train = boostlu_train
        self.boostlu_infer = boostlu_infer

    def class_activation_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Un-boosted CAMs, B x C x h x w."""
        return self.cam_head(self.backbone(images))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cams = self.class_activation_maps(images)
        if self.boostlu_train if self.training else self.boostlu_infer:
            cams = boostlu(cams, self.boost_alpha)
        return cams.mean(dim=(2, 3))

    def param_groups(self, lr: float, head_lr_mult: float) -> list[dict]:
        """Adam parameter groups: backbone at lr, CAM head at lr * head_lr_mult (LL/BG use 10)."""
        return [{"params": list(self.backbone.parameters()), "lr": lr},
                {"params": list(self.cam_head.parameters()), "lr": lr * head_lr_mult}]


class PooledFeatures(nn.Identity):
    """The backbone of a model trained on cached pooled features (`bench.features`): its inputs are already the
    N x channels x 1 x 1 features, so only the CAM head learns."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.out_channels = channels


def build_model(spec, in_channels: int, num_classes: int, feature_channels: int | None = None) -> CamClassifier:
    """The CAM classifier a RunSpec describes (backbone, weights, BoostLU flags and alpha), channels_last. With
    `feature_channels`, the model of the frozen-backbone setting: the CAM head on pooled features."""
    if feature_channels is not None:
        backbone = PooledFeatures(feature_channels)
    else:
        backbone = build_backbone(spec.backbone, in_channels, spec.weights)
    model = CamClassifier(backbone, num_classes, boost_alpha=spec.boost_alpha, boostlu_train=spec.boostlu_train,
                          boostlu_infer=spec.boostlu_infer)
    return model.to(memory_format=torch.channels_last)
