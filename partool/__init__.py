"""partool: Mamba-based pedestrian attribute recognition from training to a live camera."""

__version__ = "0.1.0"
