"""PAR metrics as the papers compute them (Rethinking-PAR's `get_pedestrian_metrics`, VTB / MambaPAR).

Label-based: per attribute j, ma_j = (TP/P + TN/N) / 2; `ma` is their mean. Instance-based: per
sample, acc = |gt ∩ pred| / |gt ∪ pred|, prec = |∩| / |pred|, recall = |∩| / |gt|, averaged over
samples; `f1` = 2·prec·recall / (prec + recall) of those averages (Rethinking-PAR) and `f1_instance`
= the mean of per-sample F1 (VTB / MambaPAR). A prediction is positive when prob > threshold.

Empty denominators give 0 (the papers add eps = 1e-20, which gives the same numbers): an attribute
with no positives scores at most 0.5 mA, a sample with no positive label and no positive
prediction scores 0 acc / prec / recall.

Unknown labels (> 1, e.g. RAP's 2s or WIDER's unspecified) are left out everywhere: such an entry
is neither positive nor negative for its attribute, and neither in the gt set nor in the predicted
set of its sample, so a guess on an entry nobody labelled is neither rewarded nor punished.
(Rethinking-PAR maps 2 to 0 before evaluating; on data without unknowns the two agree exactly.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


@dataclass
class PedestrianMetrics:
    """Scalars are fractions in [0, 1]; `label_*` arrays have one entry per attribute."""

    ma: float
    acc: float
    prec: float
    recall: float
    f1: float
    f1_instance: float
    label_ma: np.ndarray
    label_pos_recall: np.ndarray
    label_neg_recall: np.ndarray
    label_prec: np.ndarray
    label_acc: np.ndarray
    label_f1: np.ndarray
    label_tp: np.ndarray
    label_fp: np.ndarray
    label_tn: np.ndarray
    label_fn: np.ndarray
    num_samples: int
    threshold: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable copy: arrays become lists of Python numbers."""
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in asdict(self).items()}


def pedestrian_metrics(probs: Any, labels: Any, threshold: float = 0.5) -> PedestrianMetrics:
    """mA, instance Acc/Prec/Recall/F1 and per-attribute numbers for (N, A) probabilities and 0/1/unknown labels."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or probs.shape != labels.shape:
        raise ValueError(f"probs and labels must both be (N, A); got {probs.shape} and {labels.shape}")
    known = labels <= 1
    gt = labels == 1
    pred = (probs > threshold) & known
    neg = (labels == 0) & known

    tp = (gt & pred).sum(axis=0)
    fp = (neg & pred).sum(axis=0)
    tn = (neg & ~pred).sum(axis=0)
    fn = (gt & ~pred).sum(axis=0)
    pos_recall = _div(tp, tp + fn)
    neg_recall = _div(tn, tn + fp)
    label_ma = (pos_recall + neg_recall) / 2
    label_prec = _div(tp, tp + fp)

    inter = (gt & pred).sum(axis=1)
    union = (gt | pred).sum(axis=1)
    inst_acc = _div(inter, union)
    inst_prec = _div(inter, pred.sum(axis=1))
    inst_recall = _div(inter, gt.sum(axis=1))
    inst_f1 = _div(2 * inst_prec * inst_recall, inst_prec + inst_recall)
    n = probs.shape[0]
    prec = float(inst_prec.mean()) if n else 0.0
    recall = float(inst_recall.mean()) if n else 0.0
    return PedestrianMetrics(
        ma=float(label_ma.mean()) if label_ma.size else 0.0,
        acc=float(inst_acc.mean()) if n else 0.0,
        prec=prec,
        recall=recall,
        f1=float(_div(2 * prec * recall, prec + recall)),
        f1_instance=float(inst_f1.mean()) if n else 0.0,
        label_ma=label_ma,
        label_pos_recall=pos_recall,
        label_neg_recall=neg_recall,
        label_prec=label_prec,
        label_acc=_div(tp, tp + fp + fn),
        label_f1=_div(2 * label_prec * pos_recall, label_prec + pos_recall),
        label_tp=tp.astype(np.int64),
        label_fp=fp.astype(np.int64),
        label_tn=tn.astype(np.int64),
        label_fn=fn.astype(np.int64),
        num_samples=int(n),
        threshold=float(threshold),
    )
