"""Evaluation protocols of `partool train`: which splits, which threshold, and which numbers are reported.

`default` trains on train and picks the best-mA epoch on val (trainval and test when the dataset has
no val, as RAPv1), at threshold 0.5, and reports that epoch's metrics.

`paper` is the protocol the MambaPAR authors ran (Event-AHU/OpenPAR, MambaPAR_Empirical_Study):
train on trainval and evaluate every epoch on test (`config.py`), positive above 0.45 (`function.py`),
and report the best mA, the best Acc and the best F1 over the epochs, each maximised on its own, so
the three may come from three different epochs. The paper's F1 is the instance F1 (`f1_instance`).
Both protocols save the weights of the best-mA epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from partool.errors import UserError

# Metrics the paper reports, as (history key, label): its F1 is the mean of per-sample F1.
PAPER_METRICS = (("ma", "mA"), ("acc", "Acc"), ("f1_instance", "F1 (instance)"))


@dataclass(frozen=True)
class Protocol:
    """Splits and threshold of a protocol; None splits fall back to train/val, else trainval/test."""

    name: str
    train_split: str | None
    val_split: str | None
    threshold: float
    best_of_each: bool  # report each metric at its own best epoch, else every metric of the best-mA epoch

    @property
    def reports(self) -> str:
        """What the results table shows, for the line printed under it."""
        return "best of each metric over epochs" if self.best_of_each else "metrics of the best-mA epoch"

    @property
    def fixed(self) -> bool:
        """Whether the protocol pins its splits and threshold (the user may not change them)."""
        return self.train_split is not None

    def resolve(
        self, train_split: str | None, val_split: str | None, threshold: float | None
    ) -> tuple[str | None, str | None, float]:
        """The splits and threshold to run with: the user's where given, else the protocol's.

        A fixed protocol refuses values that differ from its own, so a run recorded as `paper` was
        run as the paper was.
        """
        if self.fixed:
            for option, value, own in (
                ("--train-split", train_split, self.train_split),
                ("--val-split", val_split, self.val_split),
                ("--threshold", threshold, self.threshold),
            ):
                if value is not None and value != own:
                    raise UserError(
                        f"--protocol {self.name} fixes {option} {own}, got {value}; "
                        f"drop {option} or use --protocol default"
                    )
        return (
            train_split or self.train_split,
            val_split or self.val_split,
            self.threshold if threshold is None else threshold,
        )


PROTOCOLS = {
    "default": Protocol("default", None, None, 0.5, best_of_each=False),
    "paper": Protocol("paper", "trainval", "test", 0.45, best_of_each=True),
}


def get_protocol(name: str) -> Protocol:
    """The protocol called `name`; UserError for any other name."""
    if name not in PROTOCOLS:
        raise UserError(f"unknown --protocol {name!r}; use one of {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def best_per_metric(history: Sequence[dict[str, float]], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """For each key, its highest value over the epochs and the first epoch that reached it."""
    best: dict[str, dict[str, float]] = {}
    if not history:
        return best
    for key in keys:
        top = max(history, key=lambda h: h[key])  # max keeps the first of equal values
        best[key] = {"value": float(top[key]), "epoch": int(top["epoch"])}
    return best
