"""The reference's recipe: its defaults, pair truncation, the user's own (generic) task end to end, the teacher's
label order, fine-tuning a teacher, TensorBoard logging and repeating a run from its saved config."""

import glob
import json
import logging
import os
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from distill import config as config_lib
from distill import encoding
from distill import glue, models, run
from tests import builders

# The reference's values (huawei-noah/Pretrained-Language-Model TinyBERT, task_distill.py / general_distill.py),
# written out rather than read from our code.
REFERENCE_EPOCHS = 3.0  # --num_train_epochs default
REFERENCE_ADAM_EPSILON = 1e-6  # BertAdam(e=1e-6)
REFERENCE_INIT_STD = 0.02  # init_bert_weights: normal(0, initializer_range = 0.02), bias zero
REFERENCE_TEACHER_MODE = "train"  # the teacher's eval() is never called: dropout stays on
REFERENCE_PREDICTION_LR = 3e-5  # its README's prediction-stage command
LABELS = ("yes", "no", "maybe")
FIELDS = ("premise", "hypothesis")


def _reference_truncate(tokens_a, tokens_b, max_length):
    """The reference's `_truncate_seq_pair`, restated: pop from the longer list, from tokens_b on a tie."""
    tokens_a, tokens_b = list(tokens_a), list(tokens_b)
    while len(tokens_a) + len(tokens_b) > max_length:
        if len(tokens_a) > len(tokens_b):
            tokens_a.pop()
        else:
            tokens_b.pop()
    return tokens_a, tokens_b


def test_defaults_are_the_references():
    parsed = run._parser().parse_args(["task", "--task", "SST-2", "--data", "d", "--teacher", "t", "--student", "s",
                                       "--output", "o"])
    config = config_lib.from_namespace(parsed, mode=config_lib.TASK)
    assert config.optim.epochs == REFERENCE_EPOCHS
    assert config.optim.adam_epsilon == REFERENCE_ADAM_EPSILON
    assert config.distill.teacher_mode == REFERENCE_TEACHER_MODE
    resolved = config.to_dict()["resolved"]
    assert resolved["teacher_dropout"] is True and resolved["adam_epsilon"] == REFERENCE_ADAM_EPSILON
    assert resolved["epochs"] == REFERENCE_EPOCHS and resolved["pair_truncation"].startswith("reference")
    assert resolved["fit_dense_init"]["bias"] == 0.0
    off = config_lib.from_namespace(run._parser().parse_args(
        ["task", "--task", "SST-2", "--data", "d", "--teacher", "t", "--student", "s", "--output", "o",
         "--teacher_mode", "eval"]), mode=config_lib.TASK)
    assert off.to_dict()["resolved"]["teacher_dropout"] is False


def test_fit_dense_is_initialised_like_a_bert_weight():
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    student = models.Student(BertModel(BertConfig(hidden_size=312, num_hidden_layers=1, num_attention_heads=12,
                                                  intermediate_size=64, vocab_size=100)), 768)
    weight = student.fit_dense.weight.detach()
    assert weight.shape == (768, 312)
    assert float(weight.mean()) == pytest.approx(0.0, abs=1e-3)
    assert float(weight.std()) == pytest.approx(REFERENCE_INIT_STD, rel=0.02)
    assert torch.equal(student.fit_dense.bias.detach(), torch.zeros(768))


@pytest.mark.parametrize("length_a,length_b,budget,expected", [
    (10, 10, 15, (8, 7)),   # tie: tokens_b first, then a, b, ...: a keeps the odd token
    (10, 11, 15, (8, 7)),   # b longer: b down to 10, then as the tie (the fast tokenizer keeps (7, 8))
    (11, 10, 15, (8, 7)),
    (5, 12, 15, (5, 10)),   # only the longer one is cut
    (12, 5, 15, (10, 5)),
    (3, 4, 15, (3, 4)),     # fits
    (20, 0, 15, (15, 0)),
])
def test_pair_truncation_is_the_references(length_a, length_b, budget, expected):
    assert encoding.truncated_pair_lengths(length_a, length_b, budget) == expected
    a, b = _reference_truncate(range(length_a), range(length_b), budget)
    assert (len(a), len(b)) == expected


def test_pair_truncation_matches_the_reference_loop_and_reaches_the_token_ids(tmp_path):
    rng = random.Random(0)
    for _ in range(500):
        la, lb, budget = rng.randrange(40), rng.randrange(40), rng.randrange(1, 50)
        a, b = _reference_truncate(range(la), range(lb), budget)
        assert encoding.truncated_pair_lengths(la, lb, budget) == (len(a), len(b)), (la, lb, budget)
    tokenizer = builders.make_tokenizer(str(tmp_path / "tok"))
    words = [w for w in builders.WORDS if len(tokenizer.tokenize(w)) == 1]
    first, second = " ".join(words[:10]), " ".join(words[10:20])  # 10 tokens each
    rows = encoding.encode_texts(tokenizer, [(first, second)], max_seq_len=18)  # 15 for the texts
    ids = rows.values[rows.offsets[0]:rows.offsets[1]].tolist()
    expected_a = tokenizer.convert_tokens_to_ids(words[:8])
    expected_b = tokenizer.convert_tokens_to_ids(words[10:17])
    assert ids == [tokenizer.cls_token_id, *expected_a, tokenizer.sep_token_id, *expected_b, tokenizer.sep_token_id]
    assert int(rows.segment_a_len[0]) == 10
    single = encoding.encode_texts(tokenizer, [(first,)], max_seq_len=6)
    assert single.values.tolist() == [tokenizer.cls_token_id, *tokenizer.convert_tokens_to_ids(words[:4]),
                                      tokenizer.sep_token_id]


def test_generic_metrics_by_hand():
    task = glue.generic_task(FIELDS, "label", LABELS)
    predictions, labels = np.array([0, 0, 1, 2, 2, 1]), np.array([0, 1, 1, 2, 0, 1])
    result = glue.compute_metrics(task, predictions, labels)
    # class 0: tp 1, predicted 2, actual 2 -> 0.5; class 1: tp 2, 2, 3 -> 0.8; class 2: tp 1, 2, 1 -> 2/3
    assert result["acc"] == pytest.approx(4 / 6)
    assert result["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    regression = glue.generic_task(FIELDS, "score", None, regression=True)
    values = glue.compute_metrics(regression, np.array([0.1, 0.4, 0.3, 0.9]), [0.0, 1.0, 2.0, 3.0])
    assert set(values) == {"pearson", "spearmanr", "corr"} and values["spearmanr"] == pytest.approx(0.8)


# ---------------------------------------------------------------------------------------------------------------
# The user's own task, end to end


def _dev_rows(count=24, seed=3):
    rng = np.random.default_rng(seed)
    return [{"premise": " ".join(rng.choice(builders.WORDS, 6)), "hypothesis": " ".join(rng.choice(builders.WORDS, 5)),
             "label": str(rng.choice(LABELS))} for _ in range(count)]


def _write_dev(path, rows):
    if path.endswith(".jsonl"):
        text = "".join(json.dumps(row) + "\n" for row in rows)
    elif path.endswith(".parquet"):
        pq.write_table(pa.Table.from_pylist(rows), path)
        return path
    else:
        sep = "," if path.endswith(".csv") else "\t"
        text = "".join(sep.join(line) + "\n" for line in [list(rows[0])] + [list(r.values()) for r in rows])
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


@pytest.fixture(scope="module")
def generic(tmp_path_factory):
    base = tmp_path_factory.mktemp("recipe")
    tokenizer = builders.make_tokenizer(str(base / "tok"))
    augmented = builders.write_augmented(str(base / "aug"), tokenizer, task="generic", text_fields=FIELDS,
                                        label_list=list(LABELS), examples=24, augmentations=1)
    manifest_path = os.path.join(augmented, "manifest.json")
    manifest = json.loads(open(manifest_path, encoding="utf-8").read())
    manifest["regression"] = False
    with open(manifest_path, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle)
    return {"base": base, "tokenizer": tokenizer, "augmented": augmented,
            "pretrained": builders.make_teacher(str(base / "pretrained"), tokenizer, layers=2, hidden=24, heads=12,
                                               intermediate=48),
            "student": builders.write_student_config(str(base / "student.json"), layers=1, hidden=24, heads=12),
            "dev": _write_dev(str(base / "dev.jsonl"), _dev_rows())}


def _permuted_copy(source, target, order):
    """The classifier of `source` with its outputs in another order (row i of the new head = row order[i]) and
    id2label saying so: the same model, its labels listed differently."""
    from transformers import BertForSequenceClassification
    model = BertForSequenceClassification.from_pretrained(source)
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight[order].clone())
        model.classifier.bias.copy_(model.classifier.bias[order].clone())
    names = [model.config.id2label[i] for i in order]
    model.config.id2label = dict(enumerate(names))
    model.config.label2id = {name: i for i, name in enumerate(names)}
    model.save_pretrained(target)
    builders.make_tokenizer(target)
    return target


def _hand_scored_accuracy(model_dir, tokenizer, rows):
    """Accuracy of a saved classifier, its predictions named by its own config.id2label."""
    from transformers import BertForSequenceClassification
    model = BertForSequenceClassification.from_pretrained(model_dir).eval()
    correct = 0
    for row in rows:
        encoded = tokenizer(row["premise"], row["hypothesis"], return_tensors="pt")
        with torch.no_grad():
            index = int(model(**encoded).logits.argmax(-1))
        correct += model.config.id2label[index] == row["label"]
    return correct / len(rows)


def test_finetune_then_both_task_stages_on_a_generic_task(generic, caplog):
    base = generic["base"]
    common = ["--task", "generic", "--data", generic["augmented"], "--batch_size", "8", "--num_workers", "0",
              "--log_interval", "1"]
    finetuned = base / "finetuned"
    run.main(["finetune", *common, "--model", generic["pretrained"], "--dev", generic["dev"], "--output",
              str(finetuned), "--max_steps", "4", "--eval_interval", "2", "--learning_rate", "1e-3"])
    config = json.loads((finetuned / "config.json").read_text())
    assert config["id2label"] == {"0": "yes", "1": "no", "2": "maybe"}
    saved_task = json.loads((finetuned / models.TASK_FILE).read_text())
    assert saved_task["text_fields"] == list(FIELDS) and saved_task["label_list"] == list(LABELS)
    assert saved_task["metrics"] == ["acc", "macro_f1"]
    records = [json.loads(line) for line in (finetuned / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(np.isfinite(r["cls_loss"]) for r in records)
    evals = [json.loads(line) for line in (finetuned / "eval_results.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [2, 4] and {"acc", "macro_f1"} <= set(evals[-1]["dev"])

    # A teacher saved with another label order: eval scores it as its own id2label says.
    teacher = _permuted_copy(str(finetuned), str(base / "teacher-permuted"), [2, 0, 1])
    assert json.loads(open(os.path.join(teacher, "config.json")).read())["id2label"]["0"] == "maybe"
    rows = _dev_rows()
    hand = _hand_scored_accuracy(teacher, generic["tokenizer"], rows)
    scored = run.main(["eval", "--task", "generic", "--text_columns", "premise,hypothesis", "--label_column",
                       "label", "--model", teacher, "--data", generic["dev"]])
    assert scored["dev"]["acc"] == pytest.approx(hand)
    assert scored["dev"]["acc"] == pytest.approx(run.main(["eval", "--model", str(finetuned), "--data",
                                                          generic["dev"]])["dev"]["acc"])

    intermediate, prediction = base / "int", base / "pred"
    caplog.set_level(logging.INFO)
    run.main(["task", "--stage", "intermediate", *common, "--teacher", teacher, "--student", generic["student"],
              "--output", str(intermediate), "--max_steps", "3"])
    assert any("reordered" in r.getMessage() for r in caplog.records)
    run.main(["task", "--stage", "prediction", *common, "--teacher", teacher, "--student", str(intermediate),
              "--output", str(prediction), "--max_steps", "3", "--dev", generic["dev"], "--eval_interval", "3"])
    student_config = json.loads((prediction / "config.json").read_text())
    assert student_config["id2label"] == {"0": "yes", "1": "no", "2": "maybe"}
    assert (prediction / "best" / models.TASK_FILE).exists()
    # The student's task travels with it: eval needs no task options, in any of the four dev formats.
    results = [run.main(["eval", "--model", str(prediction), "--data",
                         _write_dev(str(base / f"dev{ext}"), rows)])["dev"] for ext in (".tsv", ".csv", ".parquet")]
    results.append(run.main(["eval", "--model", str(prediction), "--data", generic["dev"]])["dev"])
    assert all(r == results[0] for r in results) and results[0]["examples"] == 24
    assert results[0]["acc"] == pytest.approx(_hand_scored_accuracy(str(prediction), generic["tokenizer"], rows))


def test_teacher_with_other_label_names_is_refused(generic):
    from transformers import BertConfig, BertForSequenceClassification
    directory = str(generic["base"] / "teacher-other-names")
    config = BertConfig(vocab_size=len(generic["tokenizer"]), hidden_size=24, num_hidden_layers=2,
                        num_attention_heads=12, intermediate_size=48, max_position_embeddings=128, num_labels=3,
                        id2label={0: "cat", 1: "dog", 2: "fish"}, label2id={"cat": 0, "dog": 1, "fish": 2})
    BertForSequenceClassification(config).save_pretrained(directory)
    generic["tokenizer"].save_pretrained(directory)
    with pytest.raises(SystemExit) as raised:
        run.main(["task", "--task", "generic", "--data", generic["augmented"], "--teacher", directory, "--student",
                  generic["student"], "--output", str(generic["base"] / "refused"), "--max_steps", "1",
                  "--num_workers", "0"])
    message = str(raised.value)
    assert message.startswith("error: ") and "\n" not in message and "['cat', 'dog', 'fish']" in message


def test_untrained_teacher_gets_a_warning_naming_the_cause(generic, caplog):
    caplog.set_level(logging.WARNING)
    # A BertModel (no classifier in its weights) passed as the task teacher.
    run.main(["task", "--task", "generic", "--data", generic["augmented"], "--teacher", generic["pretrained"],
              "--student", generic["student"], "--output", str(generic["base"] / "untrained"), "--max_steps", "1",
              "--num_workers", "0", "--batch_size", "8"])
    warnings = [r.getMessage() for r in caplog.records if "looks untrained" in r.getMessage()]
    assert warnings and "classifier.weight" in warnings[0]


def test_teacher_runs_in_train_mode_by_default_and_eval_on_request(generic):
    from distill.trainer import Trainer
    for mode, training in (("train", True), ("eval", False)):
        args = run._parser().parse_args(
            ["task", "--task", "generic", "--data", generic["augmented"], "--teacher", generic["pretrained"],
             "--student", generic["student"], "--output", str(generic["base"] / f"mode-{mode}"), "--max_steps",
             "1", "--num_workers", "0", "--teacher_mode", mode])
        trainer = Trainer(config_lib.from_namespace(args, mode=config_lib.TASK), device=torch.device("cpu"))
        trainer.train()
        assert trainer.teacher.training is training
        saved = json.loads((generic["base"] / f"mode-{mode}" / "distill_config.json").read_text())
        assert saved["distill"]["teacher_mode"] == mode and saved["optim"]["adam_epsilon"] == REFERENCE_ADAM_EPSILON
        assert trainer.optimizer.defaults["eps"] == REFERENCE_ADAM_EPSILON


def test_tensorboard_events_and_a_run_repeated_from_its_config(generic):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    first = generic["base"] / "tb"
    run.main(["task", "--task", "generic", "--data", generic["augmented"], "--teacher", generic["pretrained"],
              "--student", generic["student"], "--output", str(first), "--max_steps", "3", "--num_workers", "0",
              "--batch_size", "8", "--log_interval", "1", "--report_to", "tensorboard", "--teacher_mode", "eval"])
    events = glob.glob(str(first / "runs" / "events.out.tfevents.*"))
    assert events
    accumulator = EventAccumulator(str(first / "runs"))
    accumulator.Reload()
    losses = [event.value for event in accumulator.Scalars("train/loss")]
    logged = [json.loads(line)["loss"] for line in (first / "metrics.jsonl").read_text().splitlines()]
    assert losses == pytest.approx(logged, rel=1e-5)
    assert (first / "metrics.csv").exists() and (first / "loss.svg").exists()

    again = generic["base"] / "tb-again"
    run.main(["task", "--config", str(first / "distill_config.json"), "--output", str(again), "--report_to", "none"])
    before = json.loads((first / "distill_config.json").read_text())
    after = json.loads((again / "distill_config.json").read_text())
    assert after["run"]["output"] == str(again) and after["run"]["report_to"] == "none"
    for group in ("distill", "data", "optim"):
        assert after[group] == before[group], group
    repeated = [json.loads(line)["loss"] for line in (again / "metrics.jsonl").read_text().splitlines()]
    assert repeated == pytest.approx(logged, rel=1e-5)  # the same run again, teacher in eval mode
