"""Tools on top of the pipeline: synthetic datasets and benchmarks."""
