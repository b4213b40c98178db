"""Make confidences mean something, then pick the out-of-scope threshold.

Temperature scaling (one scalar fitted on validation logits, kept from choosing an
extreme on a handful of rows) keeps the ranking and only fixes over-confidence. The
threshold is then chosen on the calibrated validation probabilities with the very rule
the predictor applies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import torch
from torch import Tensor

from model.detector import DetectorParams
from model.predictor import verdicts as decide

TemperatureFit = Literal["likelihood", "top"]


def verdicts(
    probs: Tensor,
    in_scope: Tensor,
    oos_index: int | None,
    threshold: float,
    shares: Tensor | None = None,
    coverage_threshold: float = 0.0,
    near: Tensor | None = None,
    detector: DetectorParams | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """model/predictor.py's `verdicts` on tensors: thresholds are chosen with the rule serving applies."""
    top, top_prob, rejected = decide(
        probs.numpy(),
        in_scope.numpy(),
        oos_index,
        threshold,
        None if shares is None else shares.numpy(),
        coverage_threshold,
        None if near is None else near.numpy(),
        detector,
    )
    return torch.from_numpy(top), torch.from_numpy(top_prob), torch.from_numpy(rejected)


def fit_temperature(
    logits: Tensor,
    targets: Tensor,
    low: float = 0.05,
    high: float = 20.0,
    prior: float = 0.0,
    spread: float = 0.0,
    fit: TemperatureFit = "likelihood",
    in_scope: Tensor | None = None,
) -> float:
    """The temperature in [low, high] that best explains the validation rows, kept from an
    extreme that a handful of them cannot vouch for.

    `fit`: what "best explains" means. "likelihood": the negative log-likelihood of each row's
    intent under the whole distribution (temperature scaling as published). "top": the
    log-loss of the answer's confidence (the top in-scope intent's probability; `in_scope`
    masks `oos`) against whether that answer is right, which is what a confidence promises and
    what expected calibration error and the share right at 0.9 measure. The likelihood is
    ruled by the wrong rows' probability of their true intent, which says little about how
    sure the answers should be: on the built-in set at 5 an intent it chose T 0.87 where the
    answers' own log-loss chose 0.99, and 91% of the answers at 0.9 or more were right, not 96%.

    `spread`: a log-normal prior on the temperature, centred on 1 (the scale the network
    trained to, label smoothing and the teacher's soft targets included) with this standard
    deviation of log T; the fit is then the most probable temperature a posteriori: it
    minimises n x NLL + (log T)^2 / (2 spread^2) over the n validation rows. A handful of
    rows, all right, make the sharpest temperature look best (the NLL keeps falling towards
    `low`, where every answer is 1.0, wrong ones too: issue 29); their few nats of evidence
    cannot pull T far from 1 against the prior. Hundreds of rows outweigh it, and the fit
    becomes the plain one. 0: no prior (the plain fit by negative log-likelihood).

    `prior`: pseudo-rows of Laplace's rule of succession, a bound applied after the fit: k
    right rows of n vouch for an accuracy of about (k + a) / (n + 2a) with `prior` a, so the
    mean top probability on them may not exceed that (with six rows, all right, and a = 1,
    7/8). A fit already within the bound is kept as it is. 0: no bound. With many rows the
    bound nears the validation accuracy, so it also trims fits that the test rows then find
    under-confident (docs/BENCHMARKS.md, section 0d, where both are measured).

    The NLL is convex in the inverse temperature, and unimodal in log T; a grid over log T
    then a golden-section search around its best point finds the optimum and cannot
    diverge: an L-BFGS fit did, to NaN, on the near-uniform logits of an undertrained model.
    """
    if len(targets) == 0:
        return 1.0
    logits = logits.detach().double()
    n = len(targets)
    if fit == "top":  # the answers and whether each is right do not change with T: worked out once
        scope = torch.ones(logits.shape[1], dtype=torch.bool) if in_scope is None else in_scope
        top = logits.masked_fill(~scope, -math.inf).argmax(dim=-1)
        right = top == targets

    def loss(log_t: float) -> float:
        """The mean loss over the rows at temperature exp(log_t)."""
        scaled = logits / math.exp(log_t)
        if fit == "likelihood":
            return float(torch.nn.functional.cross_entropy(scaled, targets))
        log_probs = torch.log_softmax(scaled, dim=-1)
        log_top = log_probs.gather(1, top[:, None])[:, 0]
        # log(1 - p) as the log of every other intent's share: exact where p rounds to 1.
        log_rest = torch.logsumexp(log_probs.scatter(1, top[:, None], -math.inf), dim=-1)
        return float(-torch.where(right, log_top, log_rest).mean())

    def objective(log_t: float) -> float:
        return n * loss(log_t) + (log_t**2 / (2 * spread**2) if spread > 0 else 0.0)

    lo, hi = math.log(low), math.log(high)
    grid = [lo + (hi - lo) * i / 32 for i in range(33)]  # steps of 0.19 in log T
    best = min(range(len(grid)), key=lambda i: objective(grid[i]))
    # Two grid steps shrunk 0.618^30 times: log T to within 1e-7.
    log_t = _golden_minimum(objective, grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)], 30)
    beta = math.exp(-log_t)
    if prior > 0:
        bound = (int((logits.argmax(dim=-1) == targets).sum()) + prior) / (n + 2 * prior)

        def mean_confidence(b: float) -> float:
            return float(torch.softmax(logits * b, dim=-1).max(dim=-1).values.mean())

        # The mean top probability grows with the inverse temperature: bisect down to the bound.
        if mean_confidence(beta) > bound:
            a, b = 1 / high, beta
            for _ in range(60):
                mid = (a + b) / 2
                a, b = (mid, b) if mean_confidence(mid) <= bound else (a, mid)
            beta = a
    return 1 / beta


def _golden_minimum(f: Callable[[float], float], a: float, b: float, steps: int = 60) -> float:
    """The minimum of a unimodal function on [a, b], by golden-section search (each step
    shrinks the interval by 0.618)."""
    ratio = (5**0.5 - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(steps):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2


def choose_threshold(
    probs: Tensor,
    targets: Tensor,
    in_scope: Tensor,
    oos_index: int | None,
    max_drop: float = 0.0025,
) -> float:
    """The highest threshold expected to cost at most `max_drop` of in-scope accuracy.

    Highest is what catches the most out-of-scope input, with or without `oos`
    rows to look at: maximising a blend of accuracy and OOS recall on a
    handful of OOS rows costs far more in-scope accuracy (docs/RESEARCH.md).

    Expected, not observed on validation: a threshold just under the lowest
    of m correct validation confidences loses no validation row, yet about
    1/(m+1) of future correct answers fall under it (order statistics), and
    a small validation set would pick an overfitted high threshold. So the
    share of correct answers under a threshold is estimated as
    k/(m+1) at the k-th lowest correct confidence, linearly in between, and
    zero at chance level (1 / number of intents); a small validation set
    therefore gets a low threshold rather than an overfitted high one.
    """
    if not math.isfinite(max_drop) or not 0 <= max_drop <= 1:
        raise ValueError(f"max_drop must be within 0..1, got {max_drop!r}")
    rows = in_scope[targets]
    if not rows.any() or max_drop == 0:
        return 0.0
    top, top_prob, rejected = verdicts(probs[rows], in_scope, oos_index, 0.0)
    correct = top_prob[~rejected & (top == targets[rows])].double().sort().values
    if len(correct) == 0:
        return 0.0
    chance = min(1.0 / int(in_scope.sum()), float(correct[0]))
    threshold = _expected_drop_threshold(correct, int(rows.sum()), max_drop, chance)
    return min(math.floor(threshold * 10_000) / 10_000, 0.99)


def _expected_drop_threshold(correct: Tensor, rows: int, max_drop: float, floor: float) -> float:
    """The score under which about `max_drop` x `rows` future correct answers fall.

    `correct`: the sorted scores of the correct validation answers; the k-th lowest
    of m stands for a share k/(m+1) of future ones (see `choose_threshold`), and
    `floor` for none.
    """
    m = len(correct)
    # Budget in accuracy points -> allowed share of the correct answers.
    position = max_drop * rows / m * (m + 1)  # in units of order statistics
    knots: list[float] = [floor, *correct.tolist()]
    k = int(position)
    return knots[-1] if k >= m else knots[k] + (position - k) * (knots[k + 1] - knots[k])


def fit_detector(
    top_prob: Tensor,
    near: Tensor,
    targets: Tensor,
    top: Tensor,
    in_scope: Tensor,
    reject_known: float,
    max_drop: float,
) -> DetectorParams | None:
    """Standardise the detector's two signals on the in-scope validation rows; place its threshold.

    With `reject_known` 0, the highest threshold expected to cost at most `max_drop` of
    in-scope accuracy, as `choose_threshold` does for the probability. Above 0, the one
    that rejects that share of the rows: a team that expects many requests of intents it
    has not described gives up that many known ones to catch them. None with fewer than
    two in-scope rows to measure on.
    """
    rows = in_scope[targets]
    if int(rows.sum()) < 2:
        return None
    prob, sim = top_prob[rows].double(), near[rows].double()
    unset = DetectorParams(
        prob_mean=float(prob.mean()),
        prob_std=max(float(prob.std()), 1e-3),
        near_mean=float(sim.mean()),
        near_std=max(float(sim.std()), 1e-3),
        threshold=0.0,
    )
    scores = torch.from_numpy(unset.score(prob.numpy(), sim.numpy()))
    if reject_known > 0:
        return replace(unset, threshold=float(torch.quantile(scores, reject_known)))
    correct = scores[top[rows] == targets[rows]].sort().values
    # Below every validation row: rejects nothing seen so far (a finite value, for JSON).
    lowest = float(scores.min()) - 1.0
    if len(correct) == 0 or max_drop == 0:
        return replace(unset, threshold=lowest)
    return replace(unset, threshold=_expected_drop_threshold(correct, len(scores), max_drop, lowest))


def choose_coverage_threshold(
    probs: Tensor,
    shares: Tensor,
    targets: Tensor,
    in_scope: Tensor,
    oos_index: int | None,
    threshold: float,
    max_drop: float = 0.0025,
) -> float:
    """The threshold on the top probability times the known-word share (model/coverage.py).

    Chosen like `choose_threshold`, with a budget of its own, among the rows
    the probability threshold keeps: input of mostly unseen words (another
    domain) is caught, while on data whose validation rows are full of
    unseen names (snips) the share's threshold simply comes out low and the
    probability's threshold stays where it was.
    """
    _, _, rejected = verdicts(probs, in_scope, oos_index, threshold)
    kept = ~rejected
    return choose_threshold(probs[kept] * shares[kept, None], targets[kept], in_scope, oos_index, max_drop)
