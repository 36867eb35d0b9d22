"""Every method's loss against hand-computed values (docs/methods.md), plus the state it keeps across batches."""

import math

import pytest
import torch

import bench
from bench import TrainState


def nl(u: float) -> float:
    return -math.log(u + 1e-5)


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def bce(x: float, y: float) -> float:
    return -(y * math.log(sig(x)) + (1 - y) * math.log(1 - sig(x)))


def entropy(p: float) -> float:
    return p * nl(p) + (1 - p) * nl(1 - p)


def loss_of(name, logits, observed, epoch=1, **hparams):
    method = bench.load_method(name, **hparams)
    return method.batch_loss(torch.tensor(logits), torch.tensor(observed), epoch=epoch).item()


def test_every_family_is_registered():
    assert set(bench.list_methods()) >= {"an", "full", "ls", "wan", "epr", "asl", "role", "em", "em-apl", "ll-r",
                                         "ll-ct", "ll-cp"}
    assert bench.list_methods("ll-*") == ["ll-cp", "ll-ct", "ll-r"]


def test_ls():
    expected = (0.9 * nl(0.5) + 0.1 * nl(0.5) + 0.9 * nl(1 - sig(1.0)) + 0.1 * nl(sig(1.0))) / 2
    assert loss_of("ls", [[0.0, 1.0]], [[1.0, 0.0]]) == pytest.approx(expected, rel=1e-6)
    eps = 0.3
    expected = ((1 - eps) * nl(sig(2.0)) + eps * nl(1 - sig(2.0))) / 1
    assert loss_of("ls", [[2.0]], [[1.0]], ls_coef=eps) == pytest.approx(expected, rel=1e-6)


def test_wan_weights_negatives_by_one_over_c_minus_one():
    expected = (nl(sig(0.5)) + 0.5 * nl(1 - sig(-0.5)) + 0.5 * nl(1 - sig(1.0))) / 3
    assert loss_of("wan", [[0.5, -0.5, 1.0]], [[1.0, 0.0, 0.0]]) == pytest.approx(expected, rel=1e-6)


def test_epr_loss_and_regulariser():
    logits, observed = [[0.0, 0.0], [1.0, -1.0]], [[1.0, 0.0], [0.0, 1.0]]
    main = (nl(0.5) + nl(sig(-1.0))) / 4
    regulariser = ((0.5 + 0.5 + sig(1.0) + sig(-1.0)) / 2 - 1.5) ** 2 / 2 ** 2
    assert loss_of("epr", logits, observed, expected_num_pos=1.5) == pytest.approx(main + regulariser, rel=1e-6)


def test_asl_value_is_a_sum_with_shifted_negatives():
    p1 = sig(2.0)
    q = min(1 - p1 + 0.05, 1.0)
    expected = -(math.log(0.5) + math.log(q) * (1 - q) ** 4)
    assert loss_of("asl", [[0.0, 2.0]], [[1.0, 0.0]]) == pytest.approx(expected, rel=1e-6)
    # a mean would halve it: the reduction really is a sum
    assert loss_of("asl", [[0.0, 2.0], [0.0, 2.0]], [[1.0, 0.0], [1.0, 0.0]]) == pytest.approx(2 * expected, rel=1e-6)


def test_asl_gamma_pos_and_clip_zero():
    p = sig(1.0)
    expected = -(math.log(p) * (1 - p) ** 1 + math.log(1 - sig(-1.0)) * sig(-1.0) ** 4)
    assert loss_of("asl", [[1.0, -1.0]], [[1.0, 0.0]], gamma_pos=1.0, clip=0.0) == pytest.approx(expected, rel=1e-6)


def test_asl_s_margin_makes_an_easy_negative_cost_nothing():
    """1 - p + m is capped at 1: a negative scored below the margin m contributes log(1) = 0."""
    assert loss_of("asl", [[-4.0]], [[0.0]]) == 0.0
    assert loss_of("asl", [[-4.0]], [[0.0]], clip=0.0) == pytest.approx(-math.log(1 - sig(-4.0)) * sig(-4.0) ** 4,
                                                                        rel=1e-5)


@pytest.mark.parametrize("gamma_neg, gamma_pos", [(0.5, 0.0), (0.0, 0.5), (0.0, 1.0)])
def test_asl_focuses_with_any_positive_exponent(gamma_neg, gamma_pos):
    p = sig(1.0)
    expected = -(math.log(p) * (1 - p) ** gamma_pos + math.log(1 - p) * p ** gamma_neg)
    got = loss_of("asl", [[1.0, 1.0]], [[1.0, 0.0]], gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=0.0)
    assert got == pytest.approx(expected, rel=1e-5)


def test_asl_focal_weight_detached_by_default():
    """Same value, different gradient: with the weight detached, d/dx = -w * d log(q)/dx only."""
    grads = {}
    for focal_grad in (False, True):
        logits = torch.tensor([[1.0]], requires_grad=True)
        method = bench.load_method("asl", focal_grad=focal_grad)
        method.batch_loss(logits, torch.tensor([[0.0]]), epoch=1).backward()
        grads[focal_grad] = logits.grad.item()
    p = sig(1.0)
    q = 1 - p + 0.05
    weight = (1 - q) ** 4
    assert grads[False] == pytest.approx(weight * p * (1 - p) / q, rel=1e-5)  # -w * d ln(q)/dx, dq/dx = -p(1-p)
    assert grads[True] != pytest.approx(grads[False], rel=1e-3)


def role_with(theta, observed, expected=1.0):
    method = bench.load_method("role", expected_num_pos=expected)
    method.setup(TrainState(observed=torch.tensor(observed), epochs=2, expected_positives=expected))
    with torch.no_grad():
        method.estimates.copy_(torch.tensor(theta))
    return method


def test_role_initialisation():
    torch.manual_seed(0)
    method = bench.load_method("role", expected_num_pos=1.0)
    observed = torch.zeros(50, 4)
    observed[:, 0] = 1
    observed[:, 3] = -1
    method.setup(TrainState(observed=observed, epochs=2, expected_positives=1.0))
    theta = method.estimates.detach()
    assert torch.allclose(theta[:, 0], torch.full((50,), 5.293305), atol=1e-5)
    assert torch.allclose(theta[:, 3], torch.full((50,), -5.293305), atol=1e-5)
    assert theta[:, 1:3].abs().max() <= 0.405466 and theta[:, 1:3].std() > 0.1


def test_role_loss_hand_computed():
    theta, observed, logits = [[2.0, -1.0]], [[1.0, 0.0]], [[0.5, 0.3]]
    method = role_with(theta, observed, expected=1.0)
    p = [sig(0.5), sig(0.3)]
    e = [sig(2.0), sig(-1.0)]
    y = [1.0, 0.0]
    total = 0.0
    for c in range(2):
        classifier = y[c] * nl(p[c]) + e[c] * nl(p[c]) + (1 - e[c]) * nl(1 - p[c])
        estimator = y[c] * nl(e[c]) + p[c] * nl(e[c]) + (1 - p[c]) * nl(1 - e[c])
        total += 0.5 * (classifier + estimator)
    regulariser = 0.5 * ((sum(p) - 1.0) ** 2 / 4 + (sum(e) - 1.0) ** 2 / 4)
    loss = method.batch_loss(torch.tensor(logits), torch.tensor(observed), epoch=1, indices=torch.tensor([0]))
    assert loss.item() == pytest.approx(total / 2 + regulariser, rel=1e-6)


def test_role_stop_gradients():
    """d L / d logits holds only the classifier part: the estimator part sees sg(p)."""
    method = role_with([[0.7]], [[0.0]], expected=0.0)
    logits = torch.tensor([[0.2]], requires_grad=True)
    method.batch_loss(logits, torch.tensor([[0.0]]), epoch=1, indices=torch.tensor([0])).backward()
    p, e = sig(0.2), sig(0.7)
    d_classifier = 0.5 * (e * -(p * (1 - p)) / (p + 1e-5) + (1 - e) * (p * (1 - p)) / (1 - p + 1e-5))
    d_regulariser = 0.5 * 2 * p * p * (1 - p)
    assert logits.grad.item() == pytest.approx(d_classifier + d_regulariser, rel=1e-5)
    assert method.estimates.grad is not None and method.estimates.grad.abs().item() > 0


def test_the_expected_number_of_positives_is_the_training_mean_when_declared_0():
    state = TrainState(observed=torch.zeros(4, 3), epochs=2, expected_positives=2.26)
    for name in ("epr", "role"):
        for declared, used in ((0.0, 2.26), (0.5, 0.5), (1.0, 1.0), (3.0, 3.0)):
            method = bench.load_method(name, expected_num_pos=declared)
            method.setup(state)
            assert method.hp["expected_num_pos"] == used


def test_the_expected_positive_regulariser_averages_the_count_over_the_batch():
    """R = ((1/B) sum_b sum_c p_bc - k)^2 / C^2: two images, 3 classes."""
    logits = [[0.0, 1.0, -1.0], [2.0, -2.0, 0.5]]
    p = [[sig(x) for x in row] for row in logits]
    mean_count = (sum(p[0]) + sum(p[1])) / 2
    expected = sum(nl(p[0][c]) * (c == 0) for c in range(3)) / 6 + (mean_count - 1.2) ** 2 / 9
    got = loss_of("epr", logits, [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], expected_num_pos=1.2)
    assert got == pytest.approx(expected, rel=1e-6)


def test_the_expected_number_of_positives_defaults_to_cole_et_al_s_value_per_dataset():
    for name in ("epr", "role"):
        assert [bench.load_method(name, dataset=d).hp["expected_num_pos"] for d in ("voc", "cub", "digits-mosaic")] \
            == [1.5, 31.4, 2.26]
        assert bench.load_method(name).hp["expected_num_pos"] == 0.0         # no dataset: the training mean


def test_role_s_label_estimates_learn_at_lr_mult_times_the_rate():
    method = bench.load_method("role", lr_mult=4.0)
    with pytest.raises(RuntimeError, match="^ROLE needs setup\\(state\\) before batch_loss"):
        method.batch_loss(torch.zeros(1, 2), torch.zeros(1, 2), epoch=1, indices=torch.tensor([0]))
    method.setup(TrainState(observed=torch.zeros(3, 2), epochs=2, expected_positives=1.0))
    (group,) = method.extra_param_groups(1e-3)
    assert group["params"] == [method.estimates] and group["lr"] == pytest.approx(4e-3)
    assert bench.load_method("role").hp["lr_mult"] == 10.0


def test_em_and_observed_negative():
    expected = (nl(0.5) - 0.2 * entropy(sig(1.0)) + nl(1 - sig(-1.0))) / 3
    assert loss_of("em", [[0.0, 1.0, -1.0]], [[1.0, 0.0, -1.0]], em_alpha=0.2) == pytest.approx(expected, rel=1e-6)


def test_em_defaults_per_dataset():
    assert bench.load_method("em", dataset="voc").hp["em_alpha"] == 0.2
    assert bench.load_method("em", dataset="cub").hp["em_alpha"] == 0.01
    apl = bench.load_method("em-apl", dataset="coco").hp
    assert (apl["apl_beta"], apl["apl_warmup"], apl["neg_proportion"]) == (0.9, 5, 0.9)


def test_em_apl_soft_negative_term():
    s, beta, x = 0.3, 0.5, 0.4
    expected = (nl(sig(1.0)) + beta * (s * nl(sig(x)) + (1 - s) * nl(1 - sig(x))) - 0.1 * entropy(sig(0.0))) / 3
    got = loss_of("em-apl", [[1.0, x, 0.0]], [[1.0, -s, 0.0]], apl_beta=beta, em_alpha=0.1)
    assert got == pytest.approx(expected, rel=1e-6)


def test_em_apl_trains_observed_negatives_as_em_does_not_as_pseudo_labels():
    """-1 is an observed negative (partial-label protocols), not a pseudo-label of confidence 1."""
    logits, observed = [[0.5, -0.3, 1.0]], [[-1.0, -0.4, 0.0]]
    em = loss_of("em", [[0.5, 1.0]], [[-1.0, 0.0]], em_alpha=0.1) * 2          # the two EM terms, summed
    pseudo = 0.5 * (0.4 * nl(sig(-0.3)) + 0.6 * nl(1 - sig(-0.3)))
    got = loss_of("em-apl", logits, observed, apl_beta=0.5, em_alpha=0.1)
    assert got == pytest.approx((em + pseudo) / 3, rel=1e-6)


def test_apl_goes_on_past_a_class_without_quota_and_keeps_a_saturated_score_a_pseudo_label():
    method = bench.load_method("em-apl", apl_warmup=1, neg_proportion=0.5)
    observed = torch.zeros(6, 4)
    observed[:, 0] = 1                                   # class 0: no unknown, so no quota
    observed[:5, 1] = 1                                  # class 1: one unknown, quota int(0.5 * 1 / 1) = 0
    observed[:4, 3] = 1                                  # class 3: two unknowns, quota 1
    state = TrainState(observed=observed.clone(), epochs=2, expected_positives=1.0)
    method.setup(state)
    assert method.per_epoch_quota(2).tolist() == [0, 0, 3, 1]
    scores = torch.tensor([[0.5, 0.5, 1.0, 0.5], [0.5, 0.5, 0.2, 0.5], [0.5, 0.5, 1.0, 0.5],
                           [0.5, 0.5, 0.2, 0.5], [0.5, 0.5, 0.7, 0.9], [0.5, 0.5, 1.0, 0.4]])
    method.end_of_epoch(1, state, lambda: scores)
    assert state.observed[:, 2].tolist() == pytest.approx([0.0, -0.2, 0.0, -0.2, -0.7, 0.0])  # the 3 lowest
    assert state.observed[:, 3].tolist() == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.0, -0.4])    # the lowest
    assert torch.equal(state.observed[:, :2], observed[:, :2])
    single = bench.load_method("em-apl", apl_warmup=1, neg_proportion=1.0)   # one unknown, quota 1
    alone = TrainState(observed=torch.tensor([[1.0], [0.0]]), epochs=2, expected_positives=1.0)
    single.setup(alone)
    single.end_of_epoch(1, alone, lambda: torch.tensor([[0.9], [0.3]]))
    assert alone.observed[:, 0].tolist() == pytest.approx([1.0, -0.3])
    ties = bench.load_method("em-apl", apl_warmup=1, neg_proportion=0.5)
    tied = TrainState(observed=torch.zeros(4, 1), epochs=2, expected_positives=1.0)
    ties.setup(tied)
    ties.end_of_epoch(1, tied, lambda: torch.ones(4, 1))  # saturated scores, tied: the first two rows
    assert tied.observed[:, 0].tolist() == pytest.approx([-(1 - 1e-6), -(1 - 1e-6), 0.0, 0.0])
    assert ((tied.observed > -1) & (tied.observed < 0)).sum() == 2   # still soft pseudo-labels, not negatives


def test_apl_pseudo_labels_only_after_warmup_only_negative_never_revised():
    method = bench.load_method("em-apl", apl_warmup=2, neg_proportion=0.9)
    observed = torch.zeros(20, 2)
    observed[:5, 0] = 1
    observed[5:8, 1] = 1
    state = TrainState(observed=observed.clone(), epochs=4, expected_positives=1.0)
    method.setup(state)
    scores = torch.rand(20, 2, generator=torch.Generator().manual_seed(0))
    method.end_of_epoch(1, state, lambda: scores)
    assert torch.equal(state.observed, observed)  # warm-up: pure EM
    method.end_of_epoch(2, state, lambda: scores)
    quotas = [6, 7]  # int(0.9 * 15 / 2), int(0.9 * 17 / 2): U_c = 15, 17 unknowns; T - T_w = 2
    pseudo = (state.observed < 0) & (state.observed > -1)
    assert pseudo.sum(0).tolist() == quotas
    for c in range(2):
        unknown = (observed[:, c] == 0).nonzero().squeeze(1)
        lowest = unknown[torch.argsort(scores[unknown, c], stable=True)[:quotas[c]]]
        assert set(pseudo[:, c].nonzero().squeeze(1).tolist()) == set(lowest.tolist())
        assert torch.allclose(state.observed[lowest, c], -scores[lowest, c])
    after_epoch_2 = state.observed.clone()
    method.end_of_epoch(3, state, lambda: torch.zeros(20, 2))  # new scores must not revise old labels
    kept = (after_epoch_2 < 0)
    assert torch.equal(state.observed[kept], after_epoch_2[kept])
    assert ((state.observed < 0).sum(0) == torch.tensor(quotas) * 2).all()
    before_last = state.observed.clone()
    method.end_of_epoch(4, state, lambda: scores)  # the last epoch's labels would never be used
    assert torch.equal(state.observed, before_last)
    assert torch.equal(state.observed == 1, observed == 1)  # no positive pseudo-label, observed positives kept


def test_apl_quota_follows_the_reference_order_of_operations():
    """int(theta * U_c / (T - T_w)), as the reference computes it: with theta = 0.3 and T - T_w = 6 the quota of
    U_c = 20, 40, 60 is exactly 1, 2, 3, where (theta / (T - T_w)) * U_c gives 0.999..., 1.999..., 2.999..."""
    method = bench.load_method("em-apl", apl_warmup=2, neg_proportion=0.3)
    observed = torch.zeros(60, 4)
    observed[20:, 0] = 1  # 20 unknowns
    observed[:20, 1] = 1  # 40 unknowns
    observed[:1, 2] = 1  # 59 unknowns: 2.95 -> 2
    method.setup(TrainState(observed=observed, epochs=8, expected_positives=1.0))
    assert method.per_epoch_quota(8).tolist() == [1, 2, 2, 3]


def test_apl_warmup_must_be_below_epochs_when_the_spec_is_made():
    from bench.spec import make_spec

    assert dict(make_spec("digits-mosaic", "em-apl", 0).hparams)["apl_warmup"] == 6  # 6 of the default 12 epochs
    for overrides in ({"apl_warmup": 12}, {"epochs": 6}):
        with pytest.raises(bench.UserError, match=r"^em-apl: apl_warmup=\d+ must be below epochs=\d+, or no "
                                                  "pseudo-label is ever used$"):
            make_spec("digits-mosaic", "em-apl", 0, overrides=overrides)
    make_spec("digits-mosaic", "em-apl", 0, overrides={"epochs": 3, "apl_warmup": 2})


LL_TABLE = {  # k per epoch 1..10 with B = 16 computed as the LL/BG code does (float arithmetic)
    ("ll-r", 20): [0, 2, 4, 5, 7, 9, 10, 12, 13, 15],
    ("ll-r", 80): [0, 7, 13, 20, 26, 33, 39, 45, 52, 58],
    ("ll-r", 81): [0, 7, 13, 20, 26, 33, 39, 46, 52, 59],
    ("ll-r", 312): [0] + [25 * i for i in range(1, 10)],
    ("ll-ct", 20): [0, 1, 2, 2, 3, 4, 4, 5, 6, 6],
    ("ll-ct", 80): [0, 3, 6, 8, 11, 13, 16, 18, 21, 24],
    ("ll-ct", 81): [0, 3, 6, 8, 11, 13, 16, 19, 21, 24],
    ("ll-ct", 312): [0] + [10 * i for i in range(1, 10)],
    ("ll-cp", 20): [0] + [1] * 9,
    ("ll-cp", 80): [0] + [2] * 9,
    ("ll-cp", 81): [0] + [2] * 9,
    ("ll-cp", 312): [0] + [5] * 9,
}


@pytest.mark.parametrize("scheme, num_classes", list(LL_TABLE))
def test_ll_schedule_matches_reference_table(scheme, num_classes):
    from bench.registry import method_class

    module = __import__(method_class(scheme).__module__, fromlist=["rejection_count"])
    delta = method_class(scheme).hparams["delta_rel"].default
    got = [module.rejection_count(scheme == "ll-cp", e, 16, num_classes, delta) for e in range(1, 11)]
    assert got == LL_TABLE[(scheme, num_classes)]


def test_ll_exact_schedule_removes_float_drift():
    from bench.registry import method_class

    module = __import__(method_class("ll-r").__module__, fromlist=["rejection_count"])
    assert module.rejection_count(False, 6, 16, 20, 0.005, exact=True) == 8
    assert module.rejection_count(False, 6, 16, 80, 0.005, exact=True) == 32
    assert module.rejection_count(False, 6, 16, 20, 0.005, exact=False) == 9


def test_ll_cp_s_constant_rate_also_follows_the_exact_schedule_when_asked():
    from bench.registry import method_class

    module = __import__(method_class("ll-cp").__module__, fromlist=["rejection_count"])
    # 10 * 10 * 0.07 is 7.000000000000001 in floats: ceil gives 8, the exact value 7
    assert module.rejection_count(True, 4, 10, 10, 0.07) == 8
    assert module.rejection_count(True, 4, 10, 10, 0.07, exact=True) == 7
    assert [module.rejection_count(True, e, 16, 20, 0.25) for e in (1, 2, 3, 7)] == [0, 80, 80, 80]


def test_ll_declares_the_rates_of_the_boostlu_configuration_and_of_the_mosaics():
    from bench.registry import method_class

    deltas = {"ll-r": (0.005, 0.0182, 0.0118), "ll-ct": (0.002, 0.0073, 0.0047), "ll-cp": (0.001, 0.0036, 0.0024)}
    for scheme, (default, digits, fashion) in deltas.items():
        declared = method_class(scheme).hparams
        delta = declared["delta_rel"]
        assert (delta.default, dict(delta.per_dataset)) == (default, {"digits-mosaic": digits,
                                                                      "fashion-mosaic": fashion})
        assert delta.describe_range() == "(0, 1)" and delta.log
        assert delta.search_range(0.005) == pytest.approx((0.00125, 0.02))   # a factor 4 either side
        assert declared["exact_schedule"].default is False
        assert bench.load_method(scheme, dataset="digits-mosaic").hp["delta_rel"] == digits


def test_ll_cp_corrects_nothing_in_epoch_1_and_the_same_count_in_every_later_epoch():
    logits, observed = torch.tensor([[2.0, -1.0, 0.5, 1.5]]), torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    method = bench.load_method("ll-cp", delta_rel=0.25)
    stored = observed.clone()
    state = TrainState(observed=stored, epochs=5, expected_positives=1.0)
    method.after_step(logits, observed, torch.tensor([0]), 1, state)
    assert torch.equal(state.observed, observed)
    assert [int(method.selected(logits, observed, e).sum()) for e in (2, 3, 5)] == [1, 1, 1]
    assert int(bench.load_method("ll-ct", delta_rel=0.25).selected(logits, observed, 3).sum()) == 2  # it grows


def test_ll_selects_the_largest_unobserved_losses_even_when_all_are_below_1():
    """Observed entries are kept out of the ranking; the unobserved losses here are all small."""
    logits, observed = torch.tensor([[-5.0, -1.0, -2.0, -3.0]]), torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    chosen = bench.load_method("ll-r", delta_rel=0.25).selected(logits, observed, epoch=2)   # k = 1
    assert chosen.tolist() == [[False, True, False, False]]


def test_ll_epoch_one_is_plain_bce():
    logits, observed = [[2.0, -1.0, 0.5]], [[1.0, 0.0, 0.0]]
    expected = (bce(2.0, 1) + bce(-1.0, 0) + bce(0.5, 0)) / 3
    for scheme in ("ll-r", "ll-ct", "ll-cp"):
        assert loss_of(scheme, logits, observed, epoch=1) == pytest.approx(expected, rel=1e-6)


def test_ll_rejection_and_correction_hand_computed():
    logits, observed = [[2.0, -1.0, 0.5, 1.5]], [[1.0, 0.0, 0.0, 0.0]]
    # epoch 2, delta 0.25: k = ceil(4 * 0.25) = 1; the largest unobserved loss is at logit 1.5
    base = bce(2.0, 1) + bce(-1.0, 0) + bce(0.5, 0)
    assert loss_of("ll-r", logits, observed, epoch=2, delta_rel=0.25) == pytest.approx(base / 4, rel=1e-6)
    corrected = (base + bce(1.5, 1)) / 4
    assert loss_of("ll-ct", logits, observed, epoch=2, delta_rel=0.25) == pytest.approx(corrected, rel=1e-6)
    assert loss_of("ll-cp", logits, observed, epoch=2, delta_rel=0.25) == pytest.approx(corrected, rel=1e-6)


def test_ll_ties_select_more_than_k():
    logits, observed = [[1.0, 1.0, -3.0]], [[0.0, 0.0, 0.0]]
    # k = ceil(3 * 0.1) = 1, but the two entries at logit 1 tie: both are rejected
    assert loss_of("ll-r", logits, observed, epoch=2, delta_rel=0.1) == pytest.approx(bce(-3.0, 0) / 3, rel=1e-6)


def test_ll_selection_never_touches_observed_positives():
    """k beyond the unobserved count (tau = 0 collapse in the reference) is capped; positives stay trained."""
    method = bench.load_method("ll-r", delta_rel=0.9)
    logits, observed = torch.tensor([[-5.0, 2.0, 3.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    chosen = method.selected(logits, observed, epoch=3)  # k = ceil(3 * 0.8) = 3 > 2 unobserved
    assert chosen.tolist() == [[False, True, True]]
    loss = method.batch_loss(logits, observed, epoch=3).item()
    assert loss == pytest.approx(bce(-5.0, 1) / 3, rel=1e-6)


def test_ll_cp_changes_stored_labels_and_ll_ct_does_not():
    logits, observed = torch.tensor([[2.0, -1.0, 0.5, 1.5]]), torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    for scheme, changes in (("ll-cp", True), ("ll-ct", False), ("ll-r", False)):
        stored = torch.zeros(5, 4)
        stored[3] = observed[0]
        state = TrainState(observed=stored, epochs=5, expected_positives=1.0)
        method = bench.load_method(scheme, delta_rel=0.25)
        method.after_step(logits, observed, torch.tensor([3]), 2, state)
        expected = stored.clone()
        if changes:
            expected[3, 3] = 1.0
        assert torch.equal(state.observed, expected if changes else stored)
        assert state.observed[3].tolist() == ([1.0, 0.0, 0.0, 1.0] if changes else [1.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("name, value", [("ll-r", {"delta_rel": 1.0}), ("ll-r", {"delta_rel": 0.0}),
                                          ("ls", {"ls_coef": 0.5}), ("asl", {"gamma_neg": -1}),
                                          ("em", {"em_alpha": "x"}), ("role", {"lr_mult": 0})])
def test_out_of_range_hyperparameters(name, value):
    with pytest.raises(bench.UserError):
        bench.load_method(name, **value)
