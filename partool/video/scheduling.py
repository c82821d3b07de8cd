"""Which tracks get a PAR inference this frame (the DeepStream secondary-inference policy).

A track is inferred when it first appears, then every `every` frames, or earlier when its box has grown
by `grow` (20 %) in area since the last inference — a person walking towards the camera shows more
detail. All due crops of a step — of every stream — go into one backend call; when more are due than the
backend's largest batch, those waiting longest go first and the rest stay due for the next frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from partool.video.tracking import Track


def box_area(box) -> float:
    return max(0.0, float(box[2] - box[0])) * max(0.0, float(box[3] - box[1]))


@dataclass
class _Last:
    frame: int
    area: float


class Scheduler:
    """Per-track bookkeeping of the last inference; bounded by `forget` when tracks end."""

    def __init__(self, every: int = 10, grow: float = 0.2) -> None:
        if every < 1:
            raise ValueError("every must be at least 1")
        self.every, self.grow = every, grow
        self._last: dict[int, _Last] = {}

    def due(self, tracks: list[Track], frame: int, limit: int) -> list[Track]:
        """Tracks to infer now, at most `limit`: new ones first, then the longest waiting."""
        return [track for _, track in self.waiting(tracks, frame)[:limit]]

    def waiting(self, tracks: list[Track], frame: int) -> list[tuple[float, Track]]:
        """(urgency, track) of every due track, most urgent first: inf for new tracks, else frames waited.

        The urgency lets a pipeline serving several streams fill one batch from all of them fairly.
        """
        waiting: list[tuple[float, Track]] = []
        for track in tracks:
            last = self._last.get(track.id)
            if last is None:
                waiting.append((float("inf"), track))
            elif frame - last.frame >= self.every or box_area(track.box) >= last.area * (1.0 + self.grow):
                waiting.append((float(frame - last.frame), track))
        waiting.sort(key=lambda item: -item[0])
        return waiting

    def mark(self, tracks: list[Track], frame: int) -> None:
        """Record that `tracks` were inferred at `frame`."""
        for track in tracks:
            self._last[track.id] = _Last(frame, box_area(track.box))

    def forget(self, track_id: int) -> None:
        self._last.pop(track_id, None)

    def __len__(self) -> int:
        return len(self._last)
