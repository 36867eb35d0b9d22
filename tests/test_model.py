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
