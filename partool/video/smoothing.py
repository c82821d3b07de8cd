"""Per-track smoothing of attribute probabilities so decisions don't flicker from frame to frame.

Each inference updates an exponential moving average of the track's probabilities (weight `alpha` on
the new one). A decision switches on when the average rises above threshold + margin and off when it
falls below threshold − margin; in between it keeps its last value (hysteresis). State lives as long as
the track: the pipeline forgets a track only after it has been unseen for a while, so a person keeps
their attributes through a short occlusion. `alpha=1, margin=0` is plain per-inference thresholding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Smoothed:
    probs: np.ndarray  # (A,) float32 moving average
    on: np.ndarray  # (A,) bool decisions
    updates: int


class Smoother:
    """EMA + hysteresis per track id; memory is one (A,) pair per live track."""

    def __init__(self, threshold: float = 0.5, alpha: float = 0.3, margin: float = 0.1) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        self.threshold, self.alpha, self.margin = threshold, alpha, margin
        self._state: dict[int, Smoothed] = {}

    def update(self, track_id: int, probs: np.ndarray) -> tuple[Smoothed, np.ndarray]:
        """Fold in one inference; returns the new state and the indices of decisions that changed."""
        probs = np.asarray(probs, np.float32)
        state = self._state.get(track_id)
        if state is None:
            state = Smoothed(probs.copy(), probs >= self.threshold, 1)
            self._state[track_id] = state
            return state, np.zeros(0, np.int64)
        state.probs = self.alpha * probs + (1.0 - self.alpha) * state.probs
        on = np.where(
            state.probs >= self.threshold + self.margin,
            True,
            np.where(state.probs <= self.threshold - self.margin, False, state.on),
        )
        changed = np.flatnonzero(on != state.on)
        state.on, state.updates = on, state.updates + 1
        return state, changed

    def get(self, track_id: int) -> Smoothed | None:
        return self._state.get(track_id)

    def forget(self, track_id: int) -> None:
        self._state.pop(track_id, None)

    def __len__(self) -> int:
        return len(self._state)


def count_flips(decisions: np.ndarray) -> int:
    """How often any decision changes along a (T, A) sequence of booleans."""
    decisions = np.asarray(decisions, bool)
    return int((decisions[1:] != decisions[:-1]).sum()) if len(decisions) > 1 else 0
