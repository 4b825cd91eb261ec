"""Both pipelines through Beam's portable path (what Flink and Dataflow runner v2 execute).

`--runner=PortableRunner --job_endpoint=embed` starts Beam's job service in this process; the pipeline is turned
into its portable proto (every DoFn, coder and side input pickled and unpickled again), submitted, and run by SDK
harnesses that `--environment_type=LOOPBACK` starts in this process. On a Flink cluster only the job endpoint and
the environment (`DOCKER` with our Dockerfile's image) change. The outputs must equal the DirectRunner's.
"""

import pathlib

from pipelines import augment as augment_pipeline
from pipelines.augment.config import SAMPLE_INPUT
from pipelines import corpus as corpus_pipeline

import pytest

pytestmark = pytest.mark.slow

PORTABLE = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]


def _all_files(out: pathlib.Path):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _assert_same_output(a_dir: pathlib.Path, a: dict, b_dir: pathlib.Path, b: dict) -> None:
    assert b["counts"] == a["counts"]
    assert b["outputs"] == a["outputs"]
    a_files, b_files = _all_files(a_dir), _all_files(b_dir)
    assert sorted(a_files) == sorted(b_files)
    for name in a_files:
        if name != "manifest.json":  # holds the output path
            assert a_files[name] == b_files[name], name


def test_augment_on_the_portable_runner(tmp_path, tiny_bert, tiny_glove):
    train = tmp_path / "train.tsv"
    train.write_bytes(pathlib.Path(SAMPLE_INPUT).read_bytes() + b"\t1\nno label here\n")
    common = [f"--model={tiny_bert}", f"--glove={tiny_glove}", f"--input={train}", "--num_aug=3", "--num_shards=2",
              "--emit_candidates", "--max_reject_fraction=0.5"]
    direct = augment_pipeline.run(["--runner=DirectRunner", f"--output={tmp_path / 'direct'}"] + common)
    portable = augment_pipeline.run(PORTABLE + [f"--output={tmp_path / 'portable'}"] + common)
    assert direct["counts"]["rejects"] == {"empty_text": 1, "wrong_column_count": 1}
    # The portable run finds every masked-LM answer the DirectRunner wrote into the (default) candidate store.
    answers = direct["counts"]["stats"]["mlm_distinct_queries"]
    assert direct["counts"].pop("store") == {"answers_computed": answers, "answers_from_store": 0}
    assert portable["counts"].pop("store") == {"answers_computed": 0, "answers_from_store": answers}
    _assert_same_output(tmp_path / "direct", direct, tmp_path / "portable", portable)


def test_corpus_on_the_portable_runner(tmp_path, tiny_bert):
    text = tmp_path / "corpus.txt"
    text.write_bytes(b"One sentence here.\nAnd another one.\nA third.\n\nA second document.\nIt ends.\n\n"
                     b"Third document, one line.\n\nBad \xff line.\nFourth document.\nWith two lines.\n")
    common = [f"--input={text}", "--input_format=text", f"--tokenizer={tiny_bert}", "--num_shards=2", "--epochs=2",
              "--seed=3", "--docs_per_bucket=2", "--max_seq_len=16", "--max_reject_fraction=0.5"]
    direct = corpus_pipeline.run(["--runner=DirectRunner", f"--output={tmp_path / 'direct'}"] + common)
    portable = corpus_pipeline.run(PORTABLE + [f"--output={tmp_path / 'portable'}"] + common)
    assert direct["counts"]["rejects"] == {"non_utf8_line": 1}
    assert direct["counts"]["corpus"]["instances"] > 0
    _assert_same_output(tmp_path / "direct", direct, tmp_path / "portable", portable)
