"""Models: the frozen CLIP encoder, the VTF-PAR fusion model and temporal variants."""
