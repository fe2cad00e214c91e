#!/usr/bin/env python
"""Pretrain a GPT (gptcore) from scratch, or continue a checkpoint, with an `accelerate` training loop.

With no arguments it trains a small GPT on the public-domain books bundled in examples/data/corpus/ with
GPT-2's tokenizer and writes everything to runs/pretrain/:

    python examples/pretrain.py                                          # one device
    accelerate launch --multi_gpu --num_processes 4 examples/pretrain.py # data parallel (DDP; CPU-only: gloo)
    accelerate launch --config_file examples/accelerate_fsdp.yaml examples/pretrain.py --config gpt2-medium
    python examples/pretrain.py --resume_from_checkpoint latest          # continue after a stop or a crash

--batch_size is the global batch (sequences per optimizer step), whatever the number of processes:
accelerate splits each batch across them, and the loss is normalised by the token count of the whole
global batch, so 1 and N processes follow the same loss curve.
"""

import sys
from pathlib import Path

from gptcore.training.pretraining.run import main

# The default training data lives beside this script, not in the installed package.
BUNDLED_CORPUS = sorted(str(path) for path in (Path(__file__).resolve().parent / "data" / "corpus").glob("*.txt"))

if __name__ == "__main__":
    try:
        sys.exit(main(description=__doc__, default_train_files=BUNDLED_CORPUS))
    except (ValueError, FileNotFoundError) as err:  # mistakes in the arguments or the data: no traceback
        sys.exit(f"error: {err}")
