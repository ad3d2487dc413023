"""People in camera footage: detection and tracking."""
