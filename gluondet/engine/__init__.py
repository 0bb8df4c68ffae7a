"""The training engine: set-up (train.py), the loop (trainer.py) and its rules (hooks.py), the lr
schedule, training steps per model family, validation, logging, distributed helpers."""
