import math

import pytest
import torch

import bench


def nl(u: float) -> float:
    return -math.log(u + 1e-5)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_an_loss_hand_computed():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]])
    observed = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = (nl(sigmoid(0.0)) + nl(1 - sigmoid(2.0)) + nl(1 - sigmoid(-1.0)) + nl(sigmoid(3.0))) / 4
    loss = bench.load_method("an").batch_loss(logits, observed, epoch=1)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_an_treats_observed_negative_and_unobserved_alike():
    logits = torch.tensor([[0.5, -0.5, 1.5]])
    method = bench.load_method("an")
    a = method.batch_loss(logits, torch.tensor([[1.0, 0.0, 0.0]]), epoch=1)
    b = method.batch_loss(logits, torch.tensor([[1.0, -1.0, -1.0]]), epoch=1)
    assert a.item() == pytest.approx(b.item())


def test_an_entry_is_capped_by_log_epsilon():
    """δ = 1e-5 caps each entry at ln(1e5): a confident wrong prediction costs about 11.51, not infinity."""
    loss = bench.load_method("an").batch_loss(torch.tensor([[-100.0]]), torch.tensor([[1.0]]), epoch=1)
    assert loss.item() == pytest.approx(math.log(1e5), rel=1e-4)


def test_an_gradient_for_observed_positive():
    """∂l/∂x = -p(1-p)/(p+δ) / (B·C) for y = 1 (AN, docs/methods.md)."""
    logits = torch.tensor([[0.3, 0.0]], requires_grad=True)
    bench.load_method("an").batch_loss(logits, torch.tensor([[1.0, 0.0]]), epoch=1).backward()
    p = sigmoid(0.3)
    assert logits.grad[0, 0].item() == pytest.approx(-p * (1 - p) / (p + 1e-5) / 2, rel=1e-5)


def test_full_oracle_flag_and_loss():
    full = bench.load_method("full")
    assert full.trains_on_full_labels and not bench.load_method("an").trains_on_full_labels
    logits = torch.tensor([[1.0, -2.0]])
    labels = torch.tensor([[1.0, 1.0]])
    assert full.batch_loss(logits, labels, epoch=1).item() == pytest.approx(
        (nl(sigmoid(1.0)) + nl(sigmoid(-2.0))) / 2, rel=1e-6)


def test_unknown_hyperparameter_is_rejected():
    with pytest.raises(bench.UserError, match="has no hyperparameter 'ls_coef'"):
        bench.load_method("an", ls_coef=0.1)
