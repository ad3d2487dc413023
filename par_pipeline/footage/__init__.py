"""People in camera footage: detection and tracking."""

# tracks.json, what `par track` writes and `par search` reads (README: formats)
TRACKS_FORMAT = "par-tracks"
TRACKS_VERSION = 1
