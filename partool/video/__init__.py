"""Live video: sources, detectors, tracking, scheduling, smoothing, rendering, sinks; `run_pipeline` ties them."""

from partool.video.pipeline import FrameResult, PipelineOptions, TrackView, run_pipeline

__all__ = ["FrameResult", "PipelineOptions", "TrackView", "run_pipeline"]
