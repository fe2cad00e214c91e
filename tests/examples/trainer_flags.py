"""Trainer options the fine-tuning tests pass: no checkpoints, no experiment trackers, no progress bars, and fp32
(`--mixed_precision auto` would pick bf16 on a CPU with AMX: the figures the tests recompute would then differ
by bf16's rounding; tests/examples/test_precision_and_threads.py tests the automatic choice)."""

QUIET_TRAINER = ["--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true", "--mixed_precision", "no"]
