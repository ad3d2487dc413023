"""What each command does (manifest, extract, train, evaluate, ablation, predict, report, verify): the one layer the
CLI calls."""
