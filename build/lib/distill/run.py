"""TinyBERT distillation from the pipelines' outputs: general, task (two stages) and eval.

    python -m distill.run general --data shards/ --teacher bert-base-uncased --student 4L-312H --output out/general
    python -m distill.run task --stage intermediate --task SST-2 --data sst2-aug/ --teacher bert-sst2/ \\
        --student out/general --output out/sst2-int
    python -m distill.run task --stage prediction --task SST-2 --data sst2-aug/ --teacher bert-sst2/ \\
        --student out/sst2-int --output out/sst2 --dev glue/SST-2/dev.tsv
    python -m distill.run eval --task SST-2 --model out/sst2 --data glue/SST-2/dev.tsv
    torchrun --nproc_per_node=2 -m distill.run general ...

Errors a user can fix end with one line on stderr and exit status 1.
"""

import argparse
import json
import logging
import os
import sys
from typing import List, Optional

from distill import config as config_lib
from distill.config import GENERAL, TASK, UserError, describe

logger = logging.getLogger("distill")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, with a bad or unknown flag as a UserError (one line) instead of usage text and exit 2."""

    def error(self, message):
        raise UserError(f"{message} (see {self.prog} --help)")


def _parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="python -m distill.run", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    general = commands.add_parser("general", help="general distillation on corpus shards")
    task = commands.add_parser("task", help="task-specific distillation on augmented data")
    general_skip = ("stage", "task", "dev", "max_seq_len", "soft_ce_reduction", "regression_target")
    for sub, skip in ((general, general_skip), (task, ())):
        for config_class in config_lib.GROUPS.values():
            config_lib.add_arguments(sub, config_class, skip=skip)
    evaluate = commands.add_parser("eval", help="GLUE dev-set metrics of a saved classifier")
    evaluate.add_argument("--task", required=True, help="GLUE task name")
    evaluate.add_argument("--model", required=True, help="model directory (save_pretrained) or hub name")
    evaluate.add_argument("--data", required=True, help="dev TSV (MNLI: a file or the directory with both)")
    evaluate.add_argument("--batch_size", type=int, default=64, help="examples per batch")
    evaluate.add_argument("--max_seq_len", type=int, default=None, help="truncate to this many tokens")
    evaluate.add_argument("--output", default=None, help="also write the results as JSON here")
    evaluate.add_argument("--device", default="auto", choices=config_lib.DEVICES,
                          help="auto (CUDA when available), cpu, or cuda (refused when CUDA is not available)")
    return parser


def resolve_device(requested: str, local_rank: int = 0):
    """The torch device of `--device` for this process.

    Raises:
      UserError: cuda asked for where CUDA is not available.
    """
    import torch
    if requested == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but CUDA is not available here (no GPU, or a CPU-only torch); use "
                        "--device cpu or auto")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", local_rank)
    torch.cuda.set_device(device)
    return device


def one_line(error: BaseException) -> str:
    """A UserError's message as one line. An error raised in a DataLoader worker comes back wrapped in the
    worker's traceback, whose last line is "distill.config.UserError: <message>": that message is kept."""
    text = str(error)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if last.split(": ", 1)[0].endswith("UserError") else last
    return " ".join(text.split())


def run_eval(args: argparse.Namespace) -> dict:
    from transformers import BertForSequenceClassification
    from distill import glue
    from distill.trainer import load_tokenizer
    device = resolve_device(args.device)
    if args.output and os.path.isdir(args.output):
        raise UserError(f"--output {args.output} is a directory; name the JSON file to write")
    task = glue.get_task(args.task)
    sets = glue.dev_sets(task, args.data)
    try:
        model = BertForSequenceClassification.from_pretrained(args.model)
    except Exception as error:  # pylint: disable=broad-except  # any unreadable model folder: one line
        raise UserError(f"cannot load a classifier from {args.model!r} ({describe(error)}); point --model at a "
                        "directory saved by distill.run or save_pretrained") from error
    results = glue.evaluate(model.to(device), load_tokenizer(args.model), task, sets, device=device,
                            batch_size=args.batch_size, max_seq_len=args.max_seq_len or task.max_seq_len)
    text = json.dumps({"task": task.name, "model": args.model, "results": results}, indent=2)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
    return results


def run_training(config: config_lib.TrainConfig) -> dict:
    import torch.distributed as dist
    from distill.trainer import Trainer
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(config.run.device, local_rank)
    if world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        trainer = Trainer(config, device=device, rank=rank, world_size=world_size)
        return trainer.train()
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def main(argv: Optional[List[str]] = None) -> dict:
    """Parses argv and runs one command; a UserError becomes a one-line SystemExit."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for noisy in ("transformers", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args = _parser().parse_args(argv)
        if args.command == "eval":
            return run_eval(args)
        mode = GENERAL if args.command == "general" else TASK
        fixed = {"mode": mode}
        if mode == GENERAL:
            fixed.update(stage=config_lib.INTERMEDIATE, task=None, dev=None, max_seq_len=None)
        config = config_lib.from_namespace(args, **fixed)
        return run_training(config)
    except UserError as error:
        raise SystemExit(f"error: {one_line(error)}") from None
    except KeyboardInterrupt:
        raise SystemExit("error: interrupted; rerun the same command to resume from the last checkpoint") from None
    except SystemExit:
        raise
    except Exception as error:  # pylint: disable=broad-except
        if os.environ.get("TINYBERT_TRACEBACK"):
            raise
        first = (str(error).strip().splitlines() or [""])[0][:300]
        raise SystemExit(f"error: unexpected failure ({type(error).__name__}: {first}); set TINYBERT_TRACEBACK=1 "
                         "to see the traceback") from None


def cli() -> None:
    """The `tinybert-distill` console script: main() without its return value (which would become the exit code)."""
    main(sys.argv[1:])


if __name__ == "__main__":
    cli()
