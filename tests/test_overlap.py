"""contract.overlap: an output that is, contains or lies inside an input is refused before any work."""

import os

import pytest

from contract.errors import UserError
from contract.overlap import refuse_overlap


@pytest.mark.parametrize("output, how", [("data", "is"), ("data/sub", "lies inside"), (".", "contains")])
def test_overlapping_outputs_are_refused(tmp_path, monkeypatch, output, how):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.tsv").write_text("x\t1\n")
    with pytest.raises(UserError, match=f"--output {output} {how} the run's input --input"):
        refuse_overlap(output, {"input": [str(tmp_path / "data")], "model": "bert-base-uncased"})


def test_links_and_files_inside_the_output(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train_aug.tsv").write_text("x\n")
    os.symlink(tmp_path / "out", tmp_path / "link")
    with pytest.raises(UserError, match="contains the run's input --input"):
        refuse_overlap(str(tmp_path / "out"), {"input": [str(tmp_path / "link" / "train_aug.tsv")]})
    with pytest.raises(UserError, match="--glove"):
        refuse_overlap(str(tmp_path / "out"), {"glove": str(tmp_path / "out" / "g.zip") + ":g.txt"})


def test_apart_hub_names_and_urls(tmp_path):
    refuse_overlap(str(tmp_path / "out"), {"input": [str(tmp_path / "in.tsv")], "model": "bert-base-uncased",
                                           "glove": None, "tokenizer": "none"})
    refuse_overlap("gs://bucket/out", {"input": ["gs://bucket/output/in.tsv"]})
    with pytest.raises(UserError, match="lies inside"):
        refuse_overlap("gs://bucket/in/out", {"input": "gs://bucket/in/"})
