from __future__ import annotations

import pytest
import torch

from training.calibration import choose_coverage_threshold, choose_threshold, fit_temperature


def _rows(confidences: list[float], labels: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Probability rows whose top class (0) has the given confidence; all correct."""
    probs = []
    for c in confidences:
        rest = (1 - c) / (labels - 1)
        probs.append([c] + [rest] * (labels - 1))
    return torch.tensor(probs, dtype=torch.float64), torch.zeros(len(confidences), dtype=torch.long)


def test_threshold_follows_the_order_statistics_of_correct_confidences() -> None:
    # 999 correct rows at 0.500..0.998: a budget of 0.25% of 999 rows is 2.4975 rows,
    # position 2.4975 * 1000/999 = 2.5 order statistics, halfway from the 2nd (0.5005)
    # to the 3rd lowest (0.5010).
    conf = [0.5 + i / 2000 for i in range(999)]
    probs, y = _rows(conf)
    t = choose_threshold(probs, y, torch.ones(4, dtype=torch.bool), None, max_drop=0.0025)
    assert t == pytest.approx(0.5005 + 0.5 * 0.0005, abs=1e-4)


def test_few_validation_rows_give_a_low_threshold_not_their_minimum() -> None:
    # 14 confident correct rows: the old observed rule put the threshold just under 0.97.
    probs, y = _rows([0.97 + i / 1000 for i in range(14)])
    t = choose_threshold(probs, y, torch.ones(4, dtype=torch.bool), None, max_drop=0.0025)
    # Position 0.0025 * 15 = 0.0375 of the way from chance (0.25) to the lowest (0.97).
    assert t == pytest.approx(0.25 + 0.0375 * 0.72, abs=1e-4)


def test_the_budget_is_over_all_in_scope_rows_and_spent_on_correct_ones() -> None:
    probs, y = _rows([0.6 + i / 1000 for i in range(100)])
    y_wrong = y.clone()
    y_wrong[:50] = 1  # half the rows are wrong: half as many correct confidences to spend
    ones = torch.ones(4, dtype=torch.bool)
    all_right = choose_threshold(probs, y, ones, None, max_drop=0.05)
    half_right = choose_threshold(probs, y_wrong, ones, None, max_drop=0.05)
    # Budget: 5 of 100 rows either way. All right: position 5 * 101/100 = 5.05 among
    # 0.600..0.699, i.e. just above the 5th lowest (0.604). Half right: the 5 rows are
    # a tenth of the 50 correct ones, position 5 * 51/50 = 5.1 among 0.650..0.699.
    assert all_right == pytest.approx(0.604 + 0.05 * 0.001, abs=1e-4)
    assert half_right == pytest.approx(0.654 + 0.1 * 0.001, abs=1e-4)


def test_no_budget_or_no_in_scope_rows_means_no_threshold() -> None:
    probs, y = _rows([0.9, 0.95])
    assert choose_threshold(probs, y, torch.ones(4, dtype=torch.bool), None, max_drop=0.0) == 0.0
    in_scope = torch.tensor([False, True, True, True])  # class 0 is "oos"
    assert choose_threshold(probs, y, in_scope, 0, max_drop=0.01) == 0.0


def test_all_wrong_or_an_impossible_budget() -> None:
    probs, y = _rows([0.8, 0.9, 0.95])
    ones = torch.ones(4, dtype=torch.bool)
    assert choose_threshold(probs, torch.ones_like(y), ones, None, max_drop=0.01) == 0.0
    for bad in (float("nan"), float("inf"), -0.1, 1.5):
        with pytest.raises(ValueError, match="max_drop"):
            choose_threshold(probs, y, ones, None, max_drop=bad)


def test_threshold_is_capped_below_one() -> None:
    probs, y = _rows([0.999] * 20)
    assert choose_threshold(probs, y, torch.ones(4, dtype=torch.bool), None, max_drop=0.9) == 0.99


def test_temperature_recovers_a_known_scale() -> None:
    torch.manual_seed(0)
    true_logits = torch.randn(4000, 5) * 2
    y = torch.distributions.Categorical(logits=true_logits).sample()
    # The model's logits are 3x too sharp: the fitted temperature should undo it.
    assert fit_temperature(true_logits * 3, y) == pytest.approx(3.0, rel=0.1)


def test_the_share_threshold_is_chosen_among_the_rows_the_probability_keeps() -> None:
    # 400 correct rows at 0.9; the first 100 have half their words unseen (share 0.5).
    probs, y = _rows([0.9] * 400)
    shares = torch.ones(400, dtype=torch.float64)
    shares[:100] = 0.5
    ones = torch.ones(4, dtype=torch.bool)
    # A quarter of the rows sit under the probability threshold: they are not the share's to spend.
    probs[300:] = _rows([0.3] * 100)[0]
    t = choose_coverage_threshold(probs, shares, y, ones, None, threshold=0.5, max_drop=0.0025)
    # Kept: 300 rows; 100 at 0.45 (0.9 x 0.5), 200 at 0.9. A quarter point of 300 rows is
    # 0.75 of an order statistic, 3/4 of the way from chance (0.25) to 0.45: rows at 0.45 stay.
    assert t == pytest.approx(0.25 + 0.75 * 301 / 300 * 0.2, abs=1e-4)
    assert t < 0.45


def test_a_handful_of_right_rows_cannot_choose_the_sharpest_temperature() -> None:
    # Six validation rows, all right and already confident: the plain fit runs towards its floor
    # (to where the loss is zero in double precision), and every answer would be certain.
    logits = torch.tensor([[4.0, 0.0, 0.0, 0.0]] * 6, dtype=torch.float64)
    y = torch.zeros(6, dtype=torch.long)
    sharp = fit_temperature(logits, y)
    assert sharp < 0.15 and float(torch.softmax(logits[0] / sharp, dim=-1)[0]) > 0.999_999
    for prior in (1.0, 2.0):
        t = fit_temperature(logits, y, prior=prior)
        mean_top = float(torch.softmax(logits / t, dim=-1).max(dim=-1).values.mean())
        # Laplace's rule: 6 right of 6 vouch for (6 + a) / (6 + 2a).
        assert mean_top == pytest.approx((6 + prior) / (6 + 2 * prior), abs=1e-6)


def test_the_prior_barely_moves_a_fit_on_many_rows() -> None:
    torch.manual_seed(0)
    true_logits = torch.randn(4000, 5) * 2
    y = torch.distributions.Categorical(logits=true_logits).sample()
    plain = fit_temperature(true_logits * 3, y)
    # At most the bound's trim of a mean confidence a hair above the accuracy the rows show.
    assert fit_temperature(true_logits * 3, y, prior=1.0) == pytest.approx(plain, rel=0.03)


def test_a_log_normal_prior_keeps_a_handful_of_right_rows_near_the_trained_scale() -> None:
    # The six rows above: the plain fit runs to its floor; with the prior the rows' few nats of
    # evidence move T only a little below 1, the scale the network trained to, on either loss.
    logits = torch.tensor([[4.0, 0.0, 0.0, 0.0]] * 6, dtype=torch.float64)
    y = torch.zeros(6, dtype=torch.long)
    for fit in ("likelihood", "top"):
        assert fit_temperature(logits, y, fit=fit) < 0.15
        t = fit_temperature(logits, y, spread=0.5, fit=fit)
        assert 0.6 < t < 1.0
        assert float(torch.softmax(logits[0] / t, dim=-1)[0]) < 0.99


def test_many_rows_outweigh_the_prior_and_both_losses_recover_a_known_scale() -> None:
    torch.manual_seed(0)
    true_logits = torch.randn(4000, 5) * 2
    y = torch.distributions.Categorical(logits=true_logits).sample()
    for fit in ("likelihood", "top"):
        plain = fit_temperature(true_logits * 3, y, fit=fit)
        assert plain == pytest.approx(3.0, rel=0.1)
        assert fit_temperature(true_logits * 3, y, spread=0.5, fit=fit) == pytest.approx(plain, rel=0.03)


def test_the_answers_loss_counts_an_answer_to_an_oos_row_as_wrong() -> None:
    # Column 0 is `oos`. Two rows answered right with a margin of 2, and an out-of-scope row
    # answered (the best in-scope intent) with the same margin: no answer may be certain.
    logits = torch.tensor([[2.0, 3.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    t = fit_temperature(logits, y, fit="top", in_scope=torch.tensor([False, True, True]))
    answers = torch.softmax(logits / t, dim=-1)[:, 1:].max(dim=-1).values
    assert float(answers.min()) > 0.5 and float(answers.max()) < 0.8  # about 2 in 3 are right
    # Without its rows, a handful of right ones would make every answer certain.
    assert fit_temperature(logits[1:], y[1:], fit="top", in_scope=torch.tensor([False, True, True])) < 0.15
