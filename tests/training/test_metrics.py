from __future__ import annotations

import pytest

from training.metrics import confused_pairs, confusion_matrix, open_set, per_label, summary


def test_in_scope_accuracy_counts_rejections_as_wrong() -> None:
    y_true = ["a", "a", "b", "b", "oos", "oos", "oos", "oos"]
    y_pred = ["a", "oos", "b", "a", "oos", "oos", "a", "oos"]
    m = summary(y_true, y_pred)
    assert m["n"] == 8
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["in_scope_accuracy"] == pytest.approx(2 / 4)
    assert m["oos_recall"] == pytest.approx(3 / 4)
    assert m["oos_precision"] == pytest.approx(3 / 4)  # 4 predicted oos, 3 right


def test_oos_keys_only_when_data_has_oos() -> None:
    m = summary(["a", "b"], ["a", "oos"])
    assert set(m) == {"accuracy", "macro_f1", "n"}


def test_macro_f1_over_the_labels_of_the_data() -> None:
    # a: p=1/2 r=1 f=2/3; b: p=0 r=0 f=0 -> macro 1/3; the predicted-only "oos" is not averaged.
    m = summary(["a", "b"], ["a", "a"])
    assert m["macro_f1"] == pytest.approx(1 / 3)
    m = summary(["a", "b"], ["a", "oos"])
    assert m["macro_f1"] == pytest.approx((1 + 0) / 2)


def test_per_label_and_confusions() -> None:
    y_true, y_pred = ["a", "a", "b"], ["a", "b", "b"]
    pl = per_label(y_true, y_pred)
    assert pl["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert confused_pairs(y_true, y_pred, ["x", "y", "z"]) == [
        {"true": "a", "predicted": "b", "count": 1, "examples": ["y"]}
    ]
    assert confusion_matrix(y_true, y_pred, ["a", "b"]) == [[1, 1], [0, 1]]


def test_open_set_figures_by_hand() -> None:
    # Known a, b; "c" was never trained on, so it counts as oos (K+1 = 3 classes).
    y_true = ["a", "a", "b", "b", "c", "c", "oos", "oos"]
    y_pred = ["a", "oos", "b", "a", "oos", "b", "oos", "a"]
    m = open_set(y_true, y_pred, {"a", "b"})
    # a: tp 1, predicted 3, true 2 -> p 1/3 r 1/2 f 2/5; b: tp 1, predicted 2, true 2 -> f 1/2;
    # oos: tp 2 (a c row and an oos row), predicted 3, true 4 -> p 2/3, r 1/2, f 4/7.
    assert m["open_accuracy"] == pytest.approx(4 / 8)
    assert m["oos_f1"] == pytest.approx(4 / 7)
    assert m["known_macro_f1"] == pytest.approx((2 / 5 + 1 / 2) / 2)
    assert m["open_macro_f1"] == pytest.approx((2 / 5 + 1 / 2 + 4 / 7) / 3)


def test_summary_adds_open_figures_for_oos_or_unknown_rows() -> None:
    with_oos = summary(["a", "b", "oos"], ["a", "b", "a"])
    assert with_oos["oos_f1"] == 0.0 and with_oos["open_macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    unknown = summary(["a", "b", "c"], ["a", "b", "oos"], known={"a", "b"})
    assert unknown["oos_f1"] == 1.0 and unknown["open_macro_f1"] == 1.0
    assert "oos_f1" not in summary(["a", "b"], ["a", "b"], known={"a", "b"})


def test_calibration_figures_by_hand() -> None:
    from training.metrics import calibration

    # Two bins used of 15: four rows at 0.95 (three right), two at 0.5 (one right).
    figures = calibration(
        [0.95, 0.95, 0.95, 0.95, 0.5, 0.5],
        [True, True, True, False, True, False],
        [True, True, True, False, True, True],  # the fourth was turned away (out of scope)
    )
    assert figures["ece"] == pytest.approx(4 / 6 * abs(0.75 - 0.95) + 2 / 6 * abs(0.5 - 0.5))
    # Answers given at >= 0.9: three, all right; the one turned away is no answer.
    assert figures["confident_answers"] == pytest.approx(3 / 6)
    assert figures["confident_accuracy"] == 1.0
    assert [(b["rows"], b["accuracy"]) for b in figures["reliability"]] == [(2, 0.5), (4, 0.75)]
    assert calibration([0.3], [False], [True])["confident_accuracy"] is None
