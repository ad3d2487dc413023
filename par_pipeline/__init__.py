"""par: video-based pedestrian attribute recognition (VTF-PAR) on precomputed CLIP tokens."""

__version__ = "0.2.0"
