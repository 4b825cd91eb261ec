"""TinyBERT distillation from the pipelines' outputs: general, task (two stages) and eval.

    python -m distill.run general --data shards/ --teacher bert-base-uncased --student 4L-312H --output out/general
    python -m distill.run task --stage intermediate --task SST-2 --data sst2-aug/ --teacher bert-sst2/ \\
        --student out/general --output out/sst2-int
    python -m distill.run task --stage prediction --task SST-2 --data sst2-aug/ --teacher bert-sst2/ \\
        --student out/sst2-int --output out/sst2 --dev glue/SST-2/dev.tsv
    python -m distill.run eval --task SST-2 --model out/sst2 --data glue/SST-2/dev.tsv
    python -m distill.run finetune --task SST-2 --model bert-base-uncased --data sst2-orig/ --dev glue/SST-2/dev.tsv \
        --output out/bert-sst2
    python -m distill.run task ... --config out/sst2/distill_config.json   # repeat a run; flags override
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
from contract.errors import STDOUT_CLOSED_STATUS, UserError, describe, find_user_error, stdout_closed
from contract import claim
from contract.filesystem import LocalFilesystem
from contract.options import StrictParser, raw_value
from contract.overlap import refuse_overlap
from contract.tasks import GENERIC
from distill.config import FINETUNE, GENERAL, PREDICTION, TASK

logger = logging.getLogger("distill")


CONFIG_OPTION_HELP = ("a distill_config.json a run wrote: its options are the defaults, flags given here override "
                      "them (a flag that is on in it cannot be turned off here)")


def _parser() -> argparse.ArgumentParser:
    parser = StrictParser(prog="python -m distill.run", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    general = commands.add_parser("general", help="general distillation on corpus shards")
    task = commands.add_parser("task", help="task-specific distillation on augmented data")
    finetune = commands.add_parser("finetune", help="fine-tune a classifier on the task's labels (a teacher)")
    general_skip = ("stage", "task", "dev", "max_seq_len", "soft_ce_reduction", "regression_target")
    finetune_skip = ("teacher", "student", "stage", "temperature", "soft_ce_reduction", "regression_target",
                     "teacher_mode", "student_init")
    for sub, skip in ((general, general_skip), (task, ()), (finetune, finetune_skip)):
        for config_class in config_lib.GROUPS.values():
            config_lib.add_arguments(sub, config_class, skip=skip)
        sub.add_argument("--config", default=None, help=CONFIG_OPTION_HELP)
    finetune.add_argument("--model", required=True, help="the model to fine-tune: hub name (bert-base-uncased) or "
                                                         "directory; its classifier head is made for the task")
    evaluate = commands.add_parser("eval", help="dev-set metrics of a saved classifier")
    evaluate.add_argument("--task", default=None, help="GLUE task name, or generic with --text_columns, "
                                                       "--label_column, --label_list (default: the task the model "
                                                       "saved in tinybert_task.json)")
    evaluate.add_argument("--text_columns", default=None, help="generic: comma-separated text columns (one or two)")
    evaluate.add_argument("--label_column", default="label", help="generic: the label column")
    evaluate.add_argument("--label_list", default=None, help="generic: comma-separated labels in the model's output "
                                                             "order (default: the model's id2label names)")
    evaluate.add_argument("--regression", action="store_true", help="generic: the label is a number")
    evaluate.add_argument("--model", required=True, help="model directory (save_pretrained) or hub name")
    evaluate.add_argument("--data", required=True, help="dev file: GLUE TSV (MNLI: a file or the directory with "
                                                        "both); generic: TSV/CSV with a header, JSONL or Parquet")
    evaluate.add_argument("--batch_size", type=int, default=64, help="examples per batch")
    evaluate.add_argument("--max_seq_len", type=int, default=None, help="truncate to this many tokens")
    evaluate.add_argument("--output", default=None, help="also write the results as JSON here")
    evaluate.add_argument("--device", default="auto", choices=config_lib.DEVICES,
                          help="auto (CUDA when available), cpu, or cuda (refused when CUDA is not available)")
    return parser


def _split(text: Optional[str]) -> List[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def eval_task(args: argparse.Namespace, model_config):
    """The task `eval` scores: --task (GLUE, or generic with its column options), else the model's saved one.

    Raises:
      UserError: no task given and none saved, or a generic task without its columns or labels.
    """
    from distill import glue
    from distill.models import TASK_FILE, is_default_label_names
    saved = os.path.join(args.model, TASK_FILE)
    if args.task is None:
        if not os.path.isfile(saved):
            raise UserError(f"{args.model} records no task ({TASK_FILE}); pass --task (a GLUE name, or generic with "
                            "--text_columns, --label_column and --label_list)")
        with open(saved, encoding="utf-8") as handle:
            return glue.task_from_dict(json.load(handle))
    if args.task.lower() != GENERIC:
        return glue.get_task(args.task)
    labels = _split(args.label_list)
    id2label = getattr(model_config, "id2label", None) or {}
    if not labels and not args.regression and not is_default_label_names(id2label, len(id2label)):
        labels = [str(id2label[i]) for i in range(len(id2label))]
    return glue.generic_task(_split(args.text_columns), args.label_column, labels, regression=args.regression)


def run_eval(args: argparse.Namespace) -> dict:
    from transformers import BertForSequenceClassification
    from distill import devices, glue
    from distill.data import load_tokenizer
    device = devices.resolve_device(args.device)
    if args.output and os.path.isdir(args.output):
        raise UserError(f"--output {args.output} is a directory; name the JSON file to write")
    refuse_overlap(args.output, {"data": args.data, "model": args.model})
    try:
        model = BertForSequenceClassification.from_pretrained(args.model)
    except Exception as error:  # pylint: disable=broad-except  # any unreadable model folder: one line
        raise UserError(f"cannot load a classifier from {args.model!r} ({describe(error)}); point --model at a "
                        "directory saved by distill.run or save_pretrained") from error
    task = eval_task(args, model.config)
    sets = glue.dev_sets(task, args.data)
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
    from distill import devices
    from distill.trainer import Trainer
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = devices.resolve_device(config.run.device, local_rank)
    run_id = _claim_output(config) if rank == 0 else None
    if world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        trainer = Trainer(config, device=device, rank=rank, world_size=world_size)
        logged = trainer.train()
        if trainer.step >= trainer.total_steps:  # a halted run (--halt_at_step) leaves its claim, as a killed one
            claim.release_claim(config.run.output, run_id, fs=LocalFilesystem())
        return logged
    finally:
        if world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _claim_output(config: config_lib.TrainConfig) -> str:
    """Refuses an --output that overlaps an input, then claims it (contract.claim.claim_training_dir).

    Raises:
      UserError: the output is, contains or lies inside an input; it holds files no training run wrote; a live
        run holds it.
    """
    cfg_d, cfg_data = config.distill, config.data
    refuse_overlap(config.run.output, {"model" if cfg_d.mode == FINETUNE else "teacher": cfg_d.teacher,
                                       "student": cfg_d.student, "data": cfg_data.data,
                                       "tokenizer": cfg_data.tokenizer, "dev": cfg_data.dev})
    try:
        return claim.claim_training_dir(config.run.output, fs=LocalFilesystem())
    except claim.OutputExistsError as error:
        raise UserError(str(error)) from None


def _config_defaults(parser: argparse.ArgumentParser, argv: List[str]) -> None:
    """With `--config FILE` (a distill_config.json), its options become the subcommand's defaults (and no longer
    required), so the run repeats; flags on the command line still override them.

    Raises:
      UserError: the file is missing or not a config a run wrote.
    """
    path = raw_value(argv, "--config")
    if not path or not argv or argv[0] not in ("general", "task", "finetune"):
        return
    try:
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle)
        values = {name: value for group in config_lib.GROUPS for name, value in saved[group].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"--config {path} is not a distill_config.json a run wrote ({describe(error)})") from error
    if argv[0] == "finetune":
        values["model"] = values.get("student")
    subparser = next(action for action in parser._actions  # pylint: disable=protected-access
                     if isinstance(action, argparse._SubParsersAction)).choices[argv[0]]  # pylint: disable=protected-access
    for action in subparser._actions:  # pylint: disable=protected-access
        if action.dest in values and action.dest != "help":
            action.default = values[action.dest]
            action.required = False


def main(argv: Optional[List[str]] = None) -> dict:
    """Parses argv and runs one command; a UserError becomes a one-line SystemExit."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for noisy in ("transformers", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        parser = _parser()
        _config_defaults(parser, argv)
        args = parser.parse_args(argv)
        if args.command == "eval":
            return run_eval(args)
        mode = {"general": GENERAL, "task": TASK, "finetune": FINETUNE}[args.command]
        fixed = {"mode": mode}
        if mode == GENERAL:
            fixed.update(stage=config_lib.INTERMEDIATE, task=None, dev=None, max_seq_len=None)
        if mode == FINETUNE:
            fixed.update(stage=PREDICTION, teacher=args.model, student=args.model)
        config = config_lib.from_namespace(args, **fixed)
        return run_training(config)
    except KeyboardInterrupt:
        raise SystemExit("error: interrupted; rerun the same command to resume from the last checkpoint") from None
    except SystemExit:
        raise
    except Exception as error:  # pylint: disable=broad-except
        if stdout_closed(error):  # `... | head`: the reader has what it wanted; as `yes | head` ends, silently
            raise SystemExit(STDOUT_CLOSED_STATUS) from None
        found = find_user_error(error)
        if found is not None:
            raise SystemExit(f"error: {' '.join(found.message.split())}") from None
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
