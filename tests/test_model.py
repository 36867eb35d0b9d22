import pytest
import torch
from torch import nn

from bench.errors import UserError
from bench.model import CamClassifier, SmallCNN, boostlu


def make_model(**flags) -> CamClassifier:
    torch.manual_seed(0)
    return CamClassifier(SmallCNN(1), 10, **flags).eval()


def test_boostlu_scales_only_positive_cells():
    cam = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    assert torch.equal(boostlu(cam, 5.0), torch.tensor([-2.0, -0.5, 0.0, 2.5, 15.0]))


def test_boostlu_gradient_is_alpha_on_positive_cells_and_identity_at_zero():
    cam = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    boostlu(cam, 5.0).sum().backward()
    assert torch.equal(cam.grad, torch.tensor([1.0, 1.0, 5.0]))


def test_alpha_one_equals_gap_then_linear():
    model = make_model(boost_alpha=1.0, boostlu_infer=True)
    images = torch.randn(4, 1, 56, 56)
    features = model.backbone(images)
    linear = nn.Linear(features.shape[1], 10)
    linear.weight.data = model.cam_head.weight.data.view(10, -1)
    linear.bias.data = model.cam_head.bias.data
    assert torch.allclose(model(images), linear(features.mean(dim=(2, 3))), atol=1e-5)


def test_alpha_five_boosts_positive_cams_inside_the_bias():
    model = make_model(boost_alpha=5.0, boostlu_infer=True)
    images = torch.randn(3, 1, 56, 56)
    cams = model.class_activation_maps(images)
    expected = torch.where(cams > 0, 5 * cams, cams).mean(dim=(2, 3))
    assert torch.allclose(model(images), expected, atol=1e-6)
    assert (cams > 0).any() and (cams < 0).any()
    assert not torch.allclose(model(images), cams.mean(dim=(2, 3)))


@pytest.mark.parametrize("train_flag, infer_flag", [(False, False), (True, False), (False, True), (True, True)])
def test_boostlu_flags_act_only_in_their_mode(train_flag, infer_flag):
    model = make_model(boost_alpha=5.0, boostlu_train=train_flag, boostlu_infer=infer_flag)
    images = torch.randn(2, 1, 56, 56)
    for training, flag in ((True, train_flag), (False, infer_flag)):
        model.train(training)
        with torch.no_grad():
            torch.manual_seed(1)
            cams = model.class_activation_maps(images)
            torch.manual_seed(1)
            logits = model(images)
        plain = cams.mean(dim=(2, 3))
        boosted = boostlu(cams, 5.0).mean(dim=(2, 3))
        assert torch.allclose(logits, boosted if flag else plain, atol=1e-6)


def test_alpha_below_one_is_rejected_once_where_it_is_declared():
    from bench.spec import make_spec

    with pytest.raises(UserError, match=r"boost_alpha=0.5 is out of range: it must be in \[1, 100\]"):
        make_spec("digits-mosaic", "an+boostlu", 0, overrides={"boost_alpha": 0.5})


def test_boostlu_without_alpha_is_a_programming_error():
    with pytest.raises(ValueError, match="no boost_alpha"):
        CamClassifier(SmallCNN(1), 10, boostlu_infer=True)


def test_the_small_cnn_is_the_documented_four_stages():
    """5x5 stride 2, then three 3x3 with strides 2, 2, 1, 'same' padding, no conv bias, each with batch norm and an
    in-place ReLU: output stride 8 and 64 channels (a 56 px mosaic gives a 7 x 7 map)."""
    net = SmallCNN(1)
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, c.bias) for c in convs] == [
        (1, 16, (5, 5), (2, 2), (2, 2), None), (16, 32, (3, 3), (2, 2), (1, 1), None),
        (32, 64, (3, 3), (2, 2), (1, 1), None), (64, 64, (3, 3), (1, 1), (1, 1), None)]
    assert [type(m) for m in net] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 4
    assert all(m.inplace for m in net if isinstance(m, nn.ReLU))
    assert net(torch.zeros(2, 1, 56, 56)).shape == (2, 64, 7, 7) and net.out_channels == 64
    with pytest.raises(ValueError):
        SmallCNN(1, widths=(16, 32, 64))                      # one width per stage


@pytest.mark.parametrize("depth, blocks", [(50, 6), (101, 23)])
def test_the_resnet_features_are_torchvision_s_network_before_its_pooling(depth, blocks):
    from torchvision import models

    from bench.model import build_backbone

    torch.manual_seed(0)
    ours = build_backbone(f"resnet{depth}", 3, "none").eval()
    torch.manual_seed(0)
    reference = getattr(models, f"resnet{depth}")(weights=None).eval()
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = ours(images)
        assert features.shape == (2, 2048, 2, 2) and ours.out_channels == 2048 and len(ours.body[6]) == blocks
        logits = reference.fc(features.mean(dim=(2, 3)))
        assert torch.allclose(logits, reference(images), atol=1e-5)
        grey = build_backbone(f"resnet{depth}", 1, None).eval()
        assert grey(images[:, :1]).shape == (2, 2048, 2, 2)     # grey images repeated to 3 channels


def test_the_small_cnn_takes_no_weights_but_none():
    from bench.model import build_backbone

    for weights in (None, "none"):
        assert isinstance(build_backbone("small-cnn", 1, weights), SmallCNN)
    with pytest.raises(UserError, match="^the small-cnn backbone has no pretrained weights; drop --weights$"):
        build_backbone("small-cnn", 1, "imagenet")
    with pytest.raises(UserError, match="^unknown backbone 'vgg16'; known backbones: small-cnn, resnet50, "
                                        "resnet101$"):
        build_backbone("vgg16", 3)


def test_imagenet_weights_are_read_from_torch_s_cache_by_torchvision_s_file_name(tmp_path, monkeypatch):
    from torchvision import models

    from bench.model import build_backbone

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    path = tmp_path / "checkpoints" / "resnet50-0676ba61.pth"
    with pytest.raises(UserError, match=r"^ImageNet weights for resnet50 are not on this machine: download "
                                        r"https://download.pytorch.org/models/resnet50-0676ba61.pth to "
                                        rf"{path} \(or pass --weights PATH\)$"):
        build_backbone("resnet50", 3, "imagenet")
    torch.manual_seed(7)
    saved = models.resnet50(weights=None).state_dict()
    path.parent.mkdir()
    torch.save(saved, path)
    loaded = build_backbone("resnet50", 3, "imagenet")
    assert torch.equal(loaded.body[0].weight, saved["conv1.weight"])
    assert torch.equal(loaded.body[7][2].conv3.weight, saved["layer4.2.conv3.weight"])
    path.write_bytes(b"not a state dict")
    with pytest.raises(UserError, match=f"^cannot read weights file {path}: "):
        build_backbone("resnet50", 3, "imagenet")


def test_the_model_of_a_spec_has_its_weights_and_the_head_learns_at_head_lr_mult_times_the_rate(tmp_path):
    from torchvision import models

    from bench.model import build_model
    from bench.spec import make_spec

    torch.manual_seed(3)
    saved = models.resnet50(weights=None).state_dict()
    torch.save(saved, tmp_path / "w.pth")
    spec = make_spec("digits-mosaic", "an", 0, overrides={"backbone": "resnet50"}, weights=str(tmp_path / "w.pth"))
    model = build_model(spec, 1, 10)
    assert torch.equal(model.backbone.body[0].weight, saved["conv1.weight"])
    assert model.cam_head.out_channels == 10 and model.cam_head.in_channels == 2048
    backbone, head = model.param_groups(1e-3, 10.0)
    assert backbone == {"params": list(model.backbone.parameters()), "lr": 1e-3}
    assert head == {"params": list(model.cam_head.parameters()), "lr": pytest.approx(1e-2)}
