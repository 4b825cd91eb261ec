"""corpus -> general -> augment -> task (both stages) -> eval, with the real pipelines on tiny inputs."""

import json
import os
import pathlib
import subprocess
import sys

from distill import run
from tests import builders

import pytest

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "pipelines" / "samples" / "sst2"


def test_end_to_end_from_the_pipelines_outputs(tmp_path, capsys):
    from pipelines import demo_assets

    def pipeline(module, *argv):
        # Each pipeline through its command line, in its own process, as a user runs it.
        result = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, capture_output=True, text=True,
                                timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        assert result.returncode == 0, result.stderr[-3000:]

    tokenizer = builders.make_tokenizer(str(tmp_path / "tok"))
    teacher = builders.make_teacher(str(tmp_path / "teacher"), tokenizer, layers=2, hidden=24, heads=12)
    task_teacher = builders.make_teacher(str(tmp_path / "task_teacher"), tokenizer, layers=2, hidden=24, heads=12,
                                        num_labels=2)
    student = builders.write_student_config(str(tmp_path / "student.json"), layers=1, hidden=24, heads=12)

    # Documents separated by blank lines, sentences one per line: the corpus pipeline's text format.
    sentences = [line.split("\t")[0] for line in (SAMPLE / "train.tsv").read_text().splitlines()[1:] if line]
    text = "\n\n".join("\n".join(sentences[i:i + 4]) for i in range(0, len(sentences), 4)) + "\n"
    (tmp_path / "corpus.txt").write_text(text)
    shards = tmp_path / "shards"
    pipeline("pipelines.corpus", f"--input={tmp_path / 'corpus.txt'}", "--input_format=text", f"--output={shards}",
             f"--tokenizer={teacher}", "--num_shards=2", "--epochs=2", "--max_seq_len=32", "--docs_per_bucket=4")
    general = tmp_path / "general"
    run.main(["general", "--data", str(shards), "--teacher", teacher, "--student", student, "--output", str(general),
              "--max_steps", "3", "--batch_size", "4", "--num_workers", "0", "--log_interval", "1"])
    assert len((general / "metrics.jsonl").read_text().splitlines()) == 3

    mlm_tokenizer = demo_assets.wordpiece_tokenizer(texts=sentences)
    mlm = demo_assets.build_masked_lm(str(tmp_path / "mlm"), mlm_tokenizer, layers=1, hidden=32)
    glove = demo_assets.write_glove(str(tmp_path / "glove.txt"), *demo_assets.cooccurrence_vectors(
        [s.split() for s in sentences]))
    augmented = tmp_path / "aug"
    pipeline("pipelines.augment", "--runner=DirectRunner", "--task=SST-2", f"--input={SAMPLE / 'train.tsv'}",
             f"--output={augmented}", f"--model={mlm}", f"--glove={glove}", "--num_shards=2", "--num_aug=2")
    common = ["--task", "SST-2", "--data", str(augmented), "--teacher", task_teacher, "--batch_size", "8",
              "--num_workers", "0", "--log_interval", "1"]
    intermediate = tmp_path / "task-int"
    run.main(["task", "--stage", "intermediate", *common, "--student", str(general), "--output", str(intermediate),
              "--max_steps", "2"])
    prediction = tmp_path / "task-pred"
    run.main(["task", "--stage", "prediction", *common, "--student", str(intermediate), "--output", str(prediction),
              "--max_steps", "2", "--dev", str(SAMPLE / "dev.tsv"), "--eval_interval", "2"])
    evals = [json.loads(line) for line in (prediction / "eval_results.jsonl").read_text().splitlines()]
    assert evals[-1]["step"] == 2 and 0.0 <= evals[-1]["sst-2"]["acc"] <= 1.0
    capsys.readouterr()
    results = run.main(["eval", "--task", "SST-2", "--model", str(prediction), "--data", str(SAMPLE / "dev.tsv")])
    assert results["sst-2"]["examples"] == 8 and results["sst-2"]["malformed_rows"] == 0
