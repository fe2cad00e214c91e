"""`main` of examples/pretrain.py: set up, load the data, build the model and optimizer, train, finish."""

from __future__ import annotations

import time

from accelerate.utils import set_seed
from gptcore.training.pretraining.checkpoints import resume_or_start
from gptcore.training.pretraining.cli import DATA_ORDER_ARGS, parse_args
from gptcore.training.pretraining.data import load_document_tokenizer, prepare_data
from gptcore.training.pretraining.finish import finish
from gptcore.training.pretraining.launch import make_accelerator, prepare_output_dir
from gptcore.training.pretraining.loop import train
from gptcore.training.pretraining.model import build_model, build_optimizer
from gptcore.training.pretraining.report import MetricsLog
from gptcore.training.pretraining.state import TrainingRun


def main(argv: list[str] | None = None, description: str | None = None, default_train_files: list[str] | None = None) -> int:
    """Pretrain as the command line `argv` says. `default_train_files` are the text files to train on when
    neither --train_files nor --dataset_name is given. Returns the exit status (see `TrainingEnd`)."""
    started = time.perf_counter()
    model_args, args = parse_args(argv, description, default_train_files)
    accelerator = make_accelerator(args)
    output_dir = prepare_output_dir(args, accelerator)

    set_seed(args.seed)  # the random weights, and dropout, follow from it
    tokenizer = load_document_tokenizer(model_args)
    model = build_model(model_args, args, tokenizer)
    train_loader, eval_loader, baseline = prepare_data(args, accelerator, tokenizer, model.config.vocab_size, default_train_files)
    optimizer, scheduler = build_optimizer(model, args)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler
    )
    run_settings = {name: getattr(args, name) for name in DATA_ORDER_ARGS}  # a resumed run must have the same
    progress = resume_or_start(accelerator, args.resume_from_checkpoint, output_dir / "checkpoints", run_settings)
    metrics = MetricsLog(output_dir / "metrics.jsonl", enabled=accelerator.is_main_process)
    metrics.truncate_after(progress.step)  # a run resumed from an earlier step writes the later records again
    run = TrainingRun(
        model_args=model_args, args=args, accelerator=accelerator, tokenizer=tokenizer, model=model, optimizer=optimizer,
        scheduler=scheduler, train_loader=train_loader, eval_loader=eval_loader, progress=progress, metrics=metrics,
        output_dir=output_dir, unigram_baseline=baseline,
    )  # fmt: skip

    end = train(run)
    if end.exit_code == 0:
        finish(run, end.last_evaluation, started)
    return end.exit_code
