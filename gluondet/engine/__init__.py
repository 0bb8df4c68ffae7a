"""The training engine: the loop (train.py), lr schedule, run-folder checkpoints, and logging."""
