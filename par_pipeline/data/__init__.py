"""Data: attribute schemas, text inputs, dataset layouts, manifests, preprocessing and frame decoding."""
