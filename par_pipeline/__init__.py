"""par: video-based pedestrian attribute recognition (VTF-PAR) on precomputed CLIP tokens."""

__version__ = "0.1.0"
