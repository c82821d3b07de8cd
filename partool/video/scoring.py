"""Score a pipeline run against a clip's ground truth (`street_clip.render_clip`'s JSON).

Detection recall counts ground-truth people who are mostly in view (visible ≥ `min_visible`) and
covered by a detection with IoU ≥ `iou`; detection precision counts detections paired one to one with a
person (any part of them in view, so finding a half-hidden person is no false alarm). Each predicted
track is assigned the ground-truth person it overlaps most often; per frame and attribute, its raw
decisions (latest inference thresholded) and its smoothed decisions (EMA + hysteresis) are compared
with that person's true attributes.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from partool.video.box_stats import match_boxes
from partool.video.pipeline import FrameResult
from partool.video.smoothing import count_flips
from partool.video.tracking import iou_matrix


@dataclass(frozen=True)
class ClipScore:
    detection_recall: float  # mostly visible people covered by a detection
    detection_precision: float  # detections that are a person (one detection per person)
    people: int  # ground-truth tracks
    tracks: int  # predicted tracks that matched a person at least once
    id_switches: int  # people followed by more than one predicted track, counted beyond the first
    attribute_accuracy_raw: float
    attribute_accuracy_smoothed: float
    flips_raw: int  # decision changes along each track, summed
    flips_smoothed: int
    scored_decisions: int  # (frame, track) pairs × attributes that entered the accuracies

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_clip(
    truth: dict[str, Any],
    frames: list[FrameResult],
    threshold: float,
    attributes: list[str],
    iou: float = 0.5,
    min_visible: float = 0.5,
) -> ClipScore:
    """Compare `frames` (from `PipelineOptions.on_frame`) with the clip's `truth`."""
    truth_frames = {f["index"]: f["objects"] for f in truth["frames"]}
    true_attrs = {
        int(tid): np.array([t["attributes"][a] for a in attributes], bool)
        for tid, t in truth["tracks"].items()
    }
    visible_total = visible_found = detections = true_detections = 0
    for frame in frames:
        objects = truth_frames.get(frame.index, [])
        gt_boxes = _boxes(objects)
        visible = np.array([o["visible"] >= min_visible for o in objects], bool)
        det_boxes = np.asarray(frame.boxes, np.float32).reshape(-1, 4)
        det_iou = iou_matrix(gt_boxes, det_boxes)
        covered = det_iou.max(axis=1) >= iou if det_iou.size else np.zeros(len(objects), bool)
        visible_total += int(visible.sum())
        visible_found += int((covered & visible).sum())
        detections += len(det_boxes)
        true_detections += len(match_boxes(gt_boxes, det_boxes, iou))
    matched = _track_matches(truth_frames, frames, iou)
    owner = _owners(matched)
    followers = Counter(owner.values())
    raw_ok = smooth_ok = scored = 0
    raw_seq: dict[int, list[np.ndarray]] = defaultdict(list)
    smooth_seq: dict[int, list[np.ndarray]] = defaultdict(list)
    for pos, track, person in matched:
        if owner[track] != person:
            continue
        view = next(v for v in frames[pos].tracks if v.id == track)
        if view.raw is None or view.on is None:
            continue
        raw, smooth = np.asarray(view.raw) > threshold, np.asarray(view.on, bool)
        raw_ok += int((raw == true_attrs[person]).sum())
        smooth_ok += int((smooth == true_attrs[person]).sum())
        scored += len(attributes)
        raw_seq[track].append(raw)
        smooth_seq[track].append(smooth)
    return ClipScore(
        detection_recall=visible_found / visible_total if visible_total else 0.0,
        detection_precision=true_detections / detections if detections else 0.0,
        people=len(truth["tracks"]),
        tracks=len(owner),
        id_switches=sum(n - 1 for n in followers.values()),
        attribute_accuracy_raw=raw_ok / scored if scored else 0.0,
        attribute_accuracy_smoothed=smooth_ok / scored if scored else 0.0,
        flips_raw=sum(count_flips(np.array(s)) for s in raw_seq.values()),
        flips_smoothed=sum(count_flips(np.array(s)) for s in smooth_seq.values()),
        scored_decisions=scored,
    )


def track_people(truth: dict[str, Any], frames: list[FrameResult], iou: float = 0.5) -> dict[int, int]:
    """Each predicted track's ground-truth person: the one its box overlaps (IoU ≥ `iou`) in most frames.
    Tracks that never overlap a person are left out."""
    return _owners(_track_matches({f["index"]: f["objects"] for f in truth["frames"]}, frames, iou))


def _boxes(objects: list[dict[str, Any]]) -> np.ndarray:
    return np.array([o["box"] for o in objects], np.float32).reshape(-1, 4)


def _track_matches(
    truth_frames: dict[int, list[dict[str, Any]]], frames: list[FrameResult], iou: float
) -> list[tuple[int, int, int]]:
    """(frame position, predicted track, true person) for every track box that overlaps a person."""
    matched = []
    for pos, frame in enumerate(frames):
        objects = truth_frames.get(frame.index, [])
        if not frame.tracks or not objects:
            continue
        track_iou = iou_matrix(np.stack([t.box for t in frame.tracks]).astype(np.float32), _boxes(objects))
        for row, view in enumerate(frame.tracks):
            best = int(track_iou[row].argmax())
            if track_iou[row, best] >= iou:
                matched.append((pos, view.id, objects[best]["track_id"]))
    return matched


def _owners(matched: list[tuple[int, int, int]]) -> dict[int, int]:
    votes: dict[int, Counter[int]] = defaultdict(Counter)
    for _, track, person in matched:
        votes[track][person] += 1
    return {track: counts.most_common(1)[0][0] for track, counts in votes.items()}
