"""bench/reference_adapter.py: our folders in the formats the reference trainer reads, and, where a fetched copy of
the reference is named by TINYBERT_REFERENCE (its TinyBERT folder), its models reading them as ours compute."""

import importlib.util
import json
import os

import pytest

from distill import models
from tests import builders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# bench/ is not a package, and on sys.path its corpus.py would hide the corpus package from later tests.
_SPEC = importlib.util.spec_from_file_location("reference_adapter", os.path.join(ROOT, "bench", "reference_adapter.py"))
reference_adapter = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(reference_adapter)


@pytest.fixture()
def task_teacher(tmp_path):
    tokenizer = builders.make_tokenizer(str(tmp_path / "teacher"))
    return builders.make_teacher(str(tmp_path / "teacher"), tokenizer, layers=2, hidden=48, num_labels=3)


def test_a_saved_student_becomes_the_reference_layout(tmp_path, task_teacher):
    import torch
    from transformers import AutoTokenizer
    teacher = models.load_teacher(task_teacher, classification=False)
    config_path = builders.write_student_config(str(tmp_path / "student.json"), layers=2, hidden=24)
    student = models.build_student(config_path, teacher, classification=False)
    models.save_student(student, AutoTokenizer.from_pretrained(task_teacher), str(tmp_path / "student"))
    target = reference_adapter.to_reference_folder(str(tmp_path / "student"), str(tmp_path / "ref"),
                                                   vocab_dir=task_teacher, dropout=0.0)
    state = torch.load(os.path.join(target, "pytorch_model.bin"), weights_only=True)
    assert all(key.startswith(("bert.", "fit_dense.")) for key in state)  # its models hold `bert` and `fit_dense`
    assert torch.equal(state["fit_dense.weight"], student.fit_dense.weight.detach())
    assert not any(key.endswith("position_ids") for key in state)
    with open(os.path.join(target, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    assert config["hidden_dropout_prob"] == config["attention_probs_dropout_prob"] == 0.0
    assert os.path.isfile(os.path.join(target, "vocab.txt"))


def test_pregenerated_rows_are_the_references_input_format(tmp_path, task_teacher):
    rows = [([2, 7, 3, 9, 3], [0, 0, 0, 1, 1])]
    directory = reference_adapter.write_pregenerated(str(tmp_path / "pregen"), rows,
                                                     os.path.join(task_teacher, "vocab.txt"), 8)
    with open(os.path.join(directory, "epoch_0.json"), encoding="utf-8") as handle:
        line = json.loads(handle.readline())
    with open(os.path.join(task_teacher, "vocab.txt"), encoding="utf-8") as handle:
        vocab = [token.rstrip("\n") for token in handle]
    assert [vocab.index(token) for token in line["tokens"]] == rows[0][0]
    assert line["segment_ids"] == rows[0][1] and line["masked_lm_positions"] == []
    with open(os.path.join(directory, "epoch_0_metrics.json"), encoding="utf-8") as handle:
        assert json.load(handle) == {"num_training_examples": 1, "max_seq_len": 8}


@pytest.mark.skipif(not os.environ.get("TINYBERT_REFERENCE"), reason="set TINYBERT_REFERENCE to a fetched TinyBERT "
                                                                     "folder of huawei-noah/Pretrained-Language-Model")
def test_the_reference_model_reads_our_teacher_as_we_compute_it(tmp_path, task_teacher):
    import torch
    reference = reference_adapter.load_reference(os.environ["TINYBERT_REFERENCE"], fit_size=48,
                                                log_dir=str(tmp_path))
    folder = reference_adapter.to_reference_folder(task_teacher, str(tmp_path / "ref"), vocab_dir=task_teacher)
    theirs = reference.task.TinyBertForSequenceClassification.from_pretrained(folder, num_labels=3).eval()
    ours = models.load_teacher(task_teacher, classification=True, num_labels=3)
    ids = torch.tensor([[2, 7, 8, 3, 0, 0]])
    mask = (ids > 0).long()
    types = torch.zeros_like(ids)
    with torch.no_grad():
        logits, scores, hidden = theirs(ids, types, mask)
        mine, my_scores, my_hidden = models.forward_with_internals(ours, {"input_ids": ids, "attention_mask": mask,
                                                                          "token_type_ids": types})
    assert torch.allclose(logits, mine, atol=1e-5)  # its head without relu: classifier(pooled), as ours
    for a, b in zip(hidden, my_hidden):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(scores, my_scores):  # masked keys: -10000 added there, set here; zeroed by both losses
        assert torch.allclose(torch.where(a <= -1e2, 0, a), torch.where(b <= -1e2, 0, b), atol=1e-4)
