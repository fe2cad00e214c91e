"""Trainer options the fine-tuning tests pass: no checkpoints, no experiment trackers, no progress bars."""

QUIET_TRAINER = ["--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"]
