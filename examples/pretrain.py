#!/usr/bin/env python
"""Pretrain a GPT (gptcore) from scratch, or continue a checkpoint, with an `accelerate` training loop.

With no arguments it trains a small GPT on the public-domain corpus bundled in examples/data/corpus/ with
GPT-2's tokenizer (about 3 minutes on 2 CPU cores) and writes everything to runs/pretrain/:

    python examples/pretrain.py                                          # one device
    accelerate launch --multi_gpu --num_processes 4 examples/pretrain.py # data parallel (DDP; CPU-only: gloo)
    accelerate launch --config_file examples/accelerate_fsdp.yaml examples/pretrain.py --config gpt2-medium
    python examples/pretrain.py --resume_from_checkpoint latest          # continue after a stop or a crash

--batch_size is the global batch (sequences per optimizer step), whatever the number of processes:
accelerate splits each batch across them, and the loss is normalised by the token count of the whole
global batch, so 1 and N processes follow the same loss curve.
"""

import sys

from gptcore.training.pretraining.loop import main

if __name__ == "__main__":
    try:
        sys.exit(main(description=__doc__))
    except (ValueError, FileNotFoundError) as err:  # mistakes in the arguments or the data: no traceback
        sys.exit(f"error: {err}")
