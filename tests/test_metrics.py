"""pedestrian_metrics against hand-computed values and against a plain loop implementation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from partool.metrics import pedestrian_metrics

# 3 samples x 3 attributes. Attribute 2 has no positive label; sample 1 has no positive label and
# no positive prediction.
LABELS = np.array([[1, 0, 0], [0, 0, 0], [1, 1, 0]])
PROBS = np.array([[0.9, 0.7, 0.1], [0.1, 0.1, 0.1], [0.3, 0.8, 0.6]])


def test_hand_computed_case() -> None:
    m = pedestrian_metrics(PROBS, LABELS)
    # attr 0: TP 1 of P 2, TN 1 of N 1 -> 0.75; attr 1: TP 1/1, TN 1/2 -> 0.75; attr 2: P 0 -> 0, TN 2/3
    np.testing.assert_allclose(m.label_pos_recall, [0.5, 1.0, 0.0])
    np.testing.assert_allclose(m.label_neg_recall, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(m.label_ma, [0.75, 0.75, 1 / 3])
    assert m.ma == pytest.approx((0.75 + 0.75 + 1 / 3) / 3)
    # per sample (gt, pred): s0 ({0}, {0,1}) acc 1/2 prec 1/2 rec 1 f1 2/3; s1 ({}, {}) all 0;
    # s2 ({0,1}, {1,2}) acc 1/3 prec 1/2 rec 1/2 f1 1/2
    assert m.acc == pytest.approx((0.5 + 0 + 1 / 3) / 3)
    assert m.prec == pytest.approx((0.5 + 0 + 0.5) / 3)
    assert m.recall == pytest.approx((1 + 0 + 0.5) / 3)
    assert m.f1 == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))  # 0.4, from the averages
    assert m.f1_instance == pytest.approx((2 / 3 + 0 + 0.5) / 3)  # 0.3889, mean of per-sample F1
    np.testing.assert_array_equal(m.label_tp, [1, 1, 0])
    np.testing.assert_array_equal(m.label_fp, [0, 1, 1])
    np.testing.assert_array_equal(m.label_tn, [1, 1, 2])
    np.testing.assert_array_equal(m.label_fn, [1, 0, 0])
    # label_prec: attr 0 1/1, attr 1 1/2, attr 2 0/1; label_acc = TP / (TP + FP + FN)
    np.testing.assert_allclose(m.label_prec, [1.0, 0.5, 0.0])
    np.testing.assert_allclose(m.label_acc, [0.5, 0.5, 0.0])


def test_threshold_is_strict_and_configurable() -> None:
    labels = np.array([[1, 0]])
    assert pedestrian_metrics(np.array([[0.5, 0.5]]), labels).label_tp.tolist() == [0, 0]
    m = pedestrian_metrics(np.array([[0.5, 0.5]]), labels, threshold=0.4)
    assert m.label_tp.tolist() == [1, 0] and m.label_fp.tolist() == [0, 1]


def test_unknown_labels_are_left_out() -> None:
    # sample 0's attribute 1 is unknown (2) and predicted positive: no FP, and not in the predicted set
    labels = np.array([[1, 2], [0, 1]])
    probs = np.array([[0.9, 0.9], [0.2, 0.9]])
    m = pedestrian_metrics(probs, labels)
    np.testing.assert_array_equal(m.label_tp, [1, 1])
    np.testing.assert_array_equal(m.label_fp + m.label_tn, [1, 0])  # attr 1 has no known negative
    np.testing.assert_allclose(m.label_ma, [1.0, 0.5])
    assert m.acc == pytest.approx(1.0) and m.prec == pytest.approx(1.0)


def _loop_metrics(probs: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    """Straightforward per-attribute and per-sample loops, 0 for empty denominators."""
    n, a = labels.shape

    def frac(x: float, y: float) -> float:
        return x / y if y else 0.0

    mas = []
    for j in range(a):
        tp = tn = p = q = 0
        for i in range(n):
            if labels[i, j] == 1:
                p += 1
                tp += probs[i, j] > threshold
            elif labels[i, j] == 0:
                q += 1
                tn += probs[i, j] <= threshold
        mas.append((frac(tp, p) + frac(tn, q)) / 2)
    accs, precs, recs, f1s = [], [], [], []
    for i in range(n):
        gt = {j for j in range(a) if labels[i, j] == 1}
        pr = {j for j in range(a) if labels[i, j] <= 1 and probs[i, j] > threshold}
        pi, ri = frac(len(gt & pr), len(pr)), frac(len(gt & pr), len(gt))
        accs.append(frac(len(gt & pr), len(gt | pr)))
        precs.append(pi)
        recs.append(ri)
        f1s.append(frac(2 * pi * ri, pi + ri))
    prec, rec = sum(precs) / n, sum(recs) / n
    return {
        "ma": sum(mas) / a,
        "acc": sum(accs) / n,
        "prec": prec,
        "recall": rec,
        "f1": frac(2 * prec * rec, prec + rec),
        "f1_instance": sum(f1s) / n,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_implementation(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.choice([0, 1, 2], size=(40, 7), p=[0.6, 0.3, 0.1])
    labels[:, 3] = 0  # an attribute with no positives
    labels[5] = 0  # a sample with no positives
    probs = rng.random((40, 7))
    probs[5] = 0.1  # ... and no positive prediction
    got = pedestrian_metrics(probs, labels, threshold=0.5).as_dict()
    for key, value in _loop_metrics(probs, labels, 0.5).items():
        assert got[key] == pytest.approx(value), key


def test_equals_rethinking_eps_formulas_without_unknowns() -> None:
    """With 0/1 labels the numbers equal the papers' eps = 1e-20 formulas."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, size=(30, 5))
    labels[:, 0] = 0
    labels[2] = 0
    probs = rng.random((30, 5))
    probs[2] = 0.0
    pred = probs > 0.5
    eps = 1e-20
    pos_rec = (labels * pred).sum(0) / (labels.sum(0) + eps)
    neg_rec = ((1 - labels) * ~pred).sum(0) / ((1 - labels).sum(0) + eps)
    inter = (labels * pred).sum(1)
    union = ((labels + pred) > 0).sum(1)
    prec_i, rec_i = inter / (pred.sum(1) + eps), inter / (labels.sum(1) + eps)
    m = pedestrian_metrics(probs, labels)
    assert m.ma == pytest.approx(np.mean((pos_rec + neg_rec) / 2))
    assert m.acc == pytest.approx(np.mean(inter / (union + eps)))
    assert m.f1 == pytest.approx(2 * prec_i.mean() * rec_i.mean() / (prec_i.mean() + rec_i.mean() + eps))
    assert m.f1_instance == pytest.approx(np.mean(2 * prec_i * rec_i / (prec_i + rec_i + eps)))


def test_as_dict_is_json_serialisable() -> None:
    d = pedestrian_metrics(PROBS, LABELS).as_dict()
    back = json.loads(json.dumps(d))
    assert back["label_ma"] == pytest.approx([0.75, 0.75, 1 / 3])
    assert back["num_samples"] == 3


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        pedestrian_metrics(np.zeros((2, 3)), np.zeros((2, 4)))
