"""The commands as a user types them: the README's blocks, strict options, one-line errors, no quiet outcome.

Subprocess tests run from a folder outside the source tree, with the installed package (`pip install -e .` or
`pip install .`): the interpreter running the tests is the one whose environment holds it.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import augment as augment_pipeline
from pipelines.augment.config import AugmentConfig
from pipelines import cli, corpus as corpus_pipeline, outputs
from pipelines.corpus.config import CorpusConfig
from contract.errors import UserError

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = pathlib.Path(sys.executable).parent
README = ROOT / "README.md"


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed package, not the tree
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    env.update(extra)
    return env


def _shell(command: str, cwd: pathlib.Path, timeout: int = 600, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=_env(**env))


def _readme_block(name: str) -> str:
    """The fenced block that follows `<!-- test: NAME -->` in README.md."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- test: %s\b[^>]*-->\s*```bash\n(.*?)```" % re.escape(name), text, re.S)
    assert match, f"README.md has no block marked <!-- test: {name} -->"
    return match.group(1)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr[-3000:]
    assert sum(line.startswith("error: ") for line in lines) == 1
    return lines[-1]


# ------------------------------------------------------------------------------------------ README, as typed
@pytest.mark.slow
def test_readme_quick_start_as_typed(tmp_path):
    block = _readme_block("quick-start").strip()
    steps = [step.strip() for step in block.split("&&")]
    # The set-up steps are what CI's .ci/run does on a fresh machine; here the environment exists already.
    assert steps[0] == "python3 -m venv .venv" and steps[1].startswith(".venv/bin/pip install")
    command = " && ".join(step.replace(".venv/bin/", f"{BIN}/") for step in steps[2:])
    result = _shell(command, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out" / "augment"
    assert (out / "_SUCCESS").exists() and (out / "train_aug.tsv").exists()
    assert "augment finished in" in result.stdout and "rows" in result.stdout
    # The demo exercises both candidate sources: words in pieces get GloVe neighbours, whole words masked-LM ones.
    report = (out / "report" / "report.md").read_text(encoding="utf-8")
    for source in ("masked LM", "GloVe"):
        row = re.search(r"^\| %s \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|" % source, report, re.M)
        assert row and all(int(value.replace(",", "")) > 0 for value in row.groups()), report


@pytest.mark.slow
def test_readme_demo_commands_as_typed(tmp_path):
    """Every command of the README's demo block, in order: corpus, general, augment, both task stages, eval."""
    block = _readme_block("demo")
    commands = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert any(c.startswith("tinybert-corpus") for c in commands) and any("distill" in c for c in commands)
    for command in commands:
        result = _shell(command, tmp_path)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    assert (tmp_path / "out" / "general-data" / "_SUCCESS").exists()
    assert (tmp_path / "out" / "sst2-aug" / "_SUCCESS").exists()
    assert (tmp_path / "out" / "sst2" / "best" / "config.json").exists()
    results = json.loads(re.search(r"\{.*\}", result.stdout, re.S).group(0))
    assert results["task"] == "SST-2" and results["results"]["sst-2"]["examples"] == 8


@pytest.mark.slow
def test_the_wheel_holds_every_package_and_the_sample(tmp_path):
    """`pip install .` builds a wheel: it must hold every package, the sample task and the console scripts."""
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip(f"cannot build a wheel here: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr[-2000:]
    import zipfile
    wheel, = tmp_path.glob("tinybert_data-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("augment/algorithm.py", "contract/tasks.py", "corpus/wikimarkup.py",
                   "pipelines/augment/__main__.py", "pipelines/corpus/pipeline.py", "pipelines/corpus/__main__.py",
                   "pipelines/outputs/shards.py", "contract/claim.py", "distill/run.py",
                   "pipelines/samples/sst2/train.tsv", "pipelines/samples/sst2/dev.tsv"):
        assert module in names, module
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    scripts = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in ("tinybert-augment", "tinybert-corpus", "tinybert-distill", "tinybert-demo-assets"):
        assert script in scripts


# ------------------------------------------------------------------------------------------ strict options
def _parse_augment(argv):
    return cli.parse_args(argv, prog="python -m pipelines.augment", doc="", settings=[AugmentConfig])


@pytest.mark.parametrize("argv, expected", [
    (["--num_augs", "5"], "unknown option --num_augs; did you mean --num_aug?"),
    (["--N=2"], "unknown option --N"),
    (["--replace", "0.9"], "unknown option --replace; did you mean --replace_prob?"),
    (["--top_k", "many"], "argument --top_k: invalid int value: 'many'"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_misspelled_or_bad_flags_are_refused_by_name(argv, expected):
    with pytest.raises(UserError) as raised:
        _parse_augment(argv)
    assert str(raised.value).startswith(expected)


def test_beam_options_still_pass():
    _, options = _parse_augment(["--runner=DirectRunner", "--direct_num_workers=2", "--num_aug=3",
                                 "--direct_running_mode=multi_threading"])
    assert options.get_all_options()["direct_num_workers"] == 2


def test_run_options_make_one_view_per_class(monkeypatch):
    """A pipeline's construction asks Beam's options for a view per transform; the run's options make each kind of
    view once (Beam builds a parser and parses every flag for each), and the views share their values as Beam's do."""
    import pickle

    import apache_beam as beam
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions, TypeOptions
    _, options = _parse_augment(["--runner=DirectRunner", "--direct_num_workers=2"])
    assert isinstance(options, cli.RunOptions)
    made = []
    original = PipelineOptions.__init__

    def counted(self, *args, **kwargs):
        made.append(type(self).__name__)
        original(self, *args, **kwargs)

    monkeypatch.setattr(PipelineOptions, "__init__", counted)

    def views_made(run_options, steps):
        made.clear()
        pcoll = beam.Pipeline(options=run_options) | beam.Create([1, 2, 3])
        for step in range(steps):
            pcoll = pcoll | f"Step{step}" >> beam.Map(lambda x: x + 1)
        return len(made)

    # Each new Pipeline makes a few views of its own; the transforms add none.
    first = views_made(options, 1)
    assert views_made(options, 40) == views_made(options, 80) <= first < 20, made
    plain = PipelineOptions(["--runner=DirectRunner"])
    assert views_made(plain, 80) - views_made(plain, 40) >= 80  # Beam's own: two or more per transform
    monkeypatch.setattr(PipelineOptions, "__init__", original)
    direct = options.view_as(DirectOptions)
    assert options.view_as(DirectOptions) is direct and direct.direct_num_workers == 2
    options.view_as(StandardOptions).streaming = True
    assert options.get_all_options()["streaming"] is True and options.view_as(TypeOptions).pipeline_type_check
    copied = pickle.loads(pickle.dumps(options))
    assert "_views" not in copied.__dict__ and copied.get_all_options() == options.get_all_options()


@pytest.mark.slow
@pytest.mark.parametrize("command, expected", [
    ("tinybert-augment --help", ["--num_aug", "default per task: CoLA 30, SST-2 20", "MNLI 10", "--precision",
                                 "Beam's runner options"]),
    ("tinybert-corpus --help", ["--input_format", "--wiki_markup", "--max_seq_len", "Beam's runner options"]),
    ("tinybert-distill --help", ["general", "task", "eval"]),
])
def test_help_as_typed(tmp_path, command, expected):
    result = _shell(command, tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "error:" not in result.stderr and "Traceback" not in result.stderr
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for piece in expected:
        assert piece in text, (piece, result.stdout[-3000:])


@pytest.mark.slow
def test_a_reader_that_stops_early_ends_the_command_silently(tmp_path, tiny_bert):
    """`cmd | head`: the standard output's reader went away before the command wrote to it. The command ends as
    `yes | head` does (status 141, nothing on stderr but its log), not with an "unexpected failure" line; a corpus run
    that finished before its last line keeps its _SUCCESS."""
    text = tmp_path / "t.txt"
    text.write_text("One sentence here .\nAnother one .\n\nA second document .\n", encoding="utf-8")
    for argv in (["pipelines.augment", "--help"], ["pipelines.corpus", "--help"],
                 ["pipelines.corpus", f"--input={text}", f"--tokenizer={tiny_bert}", "--max_seq_len=24",
                  f"--output={tmp_path / 'out'}"]):
        process = subprocess.Popen([sys.executable, "-m", *argv], cwd=tmp_path, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=_env())
        process.stdout.close()  # long before the command's first line (it imports for a second or more)
        stderr = process.stderr.read().decode("utf-8")
        assert process.wait(timeout=300) == 141, (argv, stderr[-2000:])
        assert "error" not in stderr and "Traceback" not in stderr, (argv, stderr[-2000:])
    assert (tmp_path / "out" / "_SUCCESS").exists()


def test_a_broken_pipe_elsewhere_stays_an_error():
    """A BrokenPipeError while the standard output still has its reader (a worker's socket, a child's pipe) is not
    mistaken for `cmd | head`: it stays the run's failure, and the standard output is left as it was."""
    from contract.errors import stdout_closed
    try:
        try:
            raise BrokenPipeError(32, "Broken pipe")
        except BrokenPipeError as error:
            raise RuntimeError("the runner's wrapper") from error
    except RuntimeError as wrapped:
        assert not stdout_closed(wrapped)
    assert not stdout_closed(ValueError("no pipe at all"))
    os.fstat(1)  # still open


def test_corpus_refuses_the_augment_flags_and_bad_values(tmp_path):
    def parse(argv):
        return cli.parse_args(argv, prog="python -m pipelines.corpus", doc="", settings=[CorpusConfig])
    with pytest.raises(UserError, match="unknown option --max_seq_length; did you mean --max_seq_len"):
        parse(["--max_seq_length", "64"])
    with pytest.raises(UserError, match="unknown option --num_aug"):
        parse(["--num_aug", "2"])
    text = tmp_path / "t.txt"
    text.write_text("One sentence.\n")
    for flag, message in (("--max_seq_len=5", "--max_seq_len must be within"),
                          ("--split_bytes=0", "--split_bytes must be at least 1"),
                          ("--split_bytes=-5", "--split_bytes must be at least 1"),
                          ("--short_seq_prob=1.5", "--short_seq_prob must be within [0, 1]"),
                          ("--epochs=0", "--epochs must be at least 1")):
        with pytest.raises(UserError, match=re.escape(message)):
            corpus_pipeline.run([f"--input={text}", f"--output={tmp_path / 'o'}", flag])
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.parametrize("module, argv, expected", [
    ("pipelines.augment", ["--num_augs", "5"], "did you mean --num_aug?"),
    ("pipelines.corpus", ["--max_seq_length", "64"], "did you mean --max_seq_len?"),
    ("pipelines.corpus", ["--input", "x.txt", "--output", "o", "--split_bytes", "-5"], "--split_bytes must be"),
    ("pipelines.augment", ["--input", "nothing-here/*.tsv"], "no input file matches nothing-here/*.tsv"),
])
def test_errors_reach_the_shell_as_one_line(tmp_path, module, argv, expected):
    result = subprocess.run([sys.executable, "-m", module, *argv], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env=_env())
    assert expected in _one_error_line(result)


# ------------------------------------------------------------------------------------------ no quiet outcome
def _augment(tmp_path, tiny_bert, tiny_glove, *argv, name="out"):
    return augment_pipeline.run(["--runner=DirectRunner", f"--model={tiny_bert}", f"--glove={tiny_glove}",
                                 f"--output={tmp_path / name}", "--num_aug=2", "--num_shards=1", "--quiet", *argv])


def test_wrong_text_columns_fail_with_the_cause(tmp_path, tiny_bert, tiny_glove):
    data = tmp_path / "d.tsv"
    data.write_text("text\tlabel\na fine film .\tpos\na dull film .\tneg\n", encoding="utf-8")
    with pytest.raises(UserError) as raised:
        _augment(tmp_path, tiny_bert, tiny_glove, "--task=generic", f"--input={data}", "--text_columns=sentence",
                 "--label_column=label")
    line = str(raised.value)
    assert "all 2 input records were rejected (missing_column 2)" in line
    assert "columns are ['text', 'label']" in line and "no _SUCCESS written" in line
    assert not (tmp_path / "out" / "_SUCCESS").exists()
    assert outputs.read_manifest(str(tmp_path / "out"), require_success=False)["status"] == "failed"


def test_a_header_that_is_not_the_task_layout_is_one_line(tmp_path, tiny_bert, tiny_glove):
    data = tmp_path / "train.tsv"
    data.write_text("sentence,label\na fine film .,1\na dull film .,0\n", encoding="utf-8")  # a CSV, no tab
    with pytest.raises(UserError, match=r"the header has 1 column; SST-2 expects sentence<TAB>label"):
        _augment(tmp_path, tiny_bert, tiny_glove, f"--input={data}")


def test_more_than_the_reject_fraction_fails(tmp_path, tiny_bert, tiny_glove):
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\na fine film .\t1\na dull film .\t0\n\t1\nbad\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"2 of 4 input records were rejected \(50% > --max_reject_fraction 0.1"):
        _augment(tmp_path, tiny_bert, tiny_glove, f"--input={data}")
    manifest = _augment(tmp_path, tiny_bert, tiny_glove, f"--input={data}", "--max_reject_fraction=0.5", name="ok")
    assert manifest["counts"]["rejects"] == {"empty_text": 1, "wrong_column_count": 1}
    assert (tmp_path / "ok" / "_SUCCESS").exists()


@pytest.mark.parametrize("content", [b"", b"sentence\tlabel\n"])
def test_empty_or_header_only_input_fails(tmp_path, tiny_bert, tiny_glove, content):
    data = tmp_path / "train.tsv"
    data.write_bytes(content)
    with pytest.raises(UserError, match="is empty|holds no record"):
        _augment(tmp_path, tiny_bert, tiny_glove, f"--input={data}")
    assert not (tmp_path / "out" / "_SUCCESS").exists()


def test_csv_with_a_byte_order_mark_keeps_every_row(tmp_path, tiny_bert, tiny_glove):
    data = tmp_path / "d.csv"
    data.write_bytes("\ufefftext,label\n\"a fine, warm film .\",pos\na dull film .,neg\n".encode("utf-8"))
    manifest = _augment(tmp_path, tiny_bert, tiny_glove, "--task=generic", f"--input={data}", "--text_columns=text",
                        "--label_column=label")
    assert manifest["counts"]["stats"]["examples"] == 2 and manifest["counts"]["rejects"] == {}


def test_hub_parquet_of_a_glue_task_is_read(tmp_path, tiny_bert, tiny_glove):
    """`datasets`' GLUE layout (sentence, label as a class index, idx) given as --task SST-2."""
    path = tmp_path / "train-00000-of-00001.parquet"
    table = pa.table({"sentence": ["a warm , funny film .", "a dull film .", "the test split ."],
                      "label": [1, 0, -1], "idx": [10, 11, 12]})
    features = {"info": {"features": {"label": {"names": ["negative", "positive"], "_type": "ClassLabel"}}}}
    table = table.replace_schema_metadata({"huggingface": json.dumps(features)})
    pq.write_table(table, path)
    manifest = _augment(tmp_path, tiny_bert, tiny_glove, "--task=SST-2", f"--input={path}",
                        "--max_reject_fraction=0.5")
    assert manifest["input_format"] == "parquet" and manifest["counts"]["stats"]["examples"] == 2
    assert manifest["counts"]["rejects"] == {"bad_label": 1}
    lines = (tmp_path / "out" / "train_aug.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "sentence\tlabel" and "a warm , funny film .\t1" in lines and "a dull film .\t0" in lines


def test_an_input_directory_means_its_files(tmp_path, tiny_bert, tiny_glove):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "train.tsv").write_text("sentence\tlabel\na fine film .\t1\n", encoding="utf-8")
    (folder / "_SUCCESS").write_text("")
    manifest = _augment(tmp_path, tiny_bert, tiny_glove, f"--input={folder}")
    assert [pathlib.Path(f["path"]).name for f in manifest["inputs"]] == ["train.tsv"]


def test_corpus_parquet_without_text_is_one_line(tmp_path, tiny_bert):
    path = tmp_path / "wiki.parquet"
    pq.write_table(pa.table({"id": ["1"], "body": ["Some text."]}), path)
    with pytest.raises(UserError) as raised:
        corpus_pipeline.run([f"--input={path}", "--input_format=wikipedia-parquet", f"--output={tmp_path / 'o'}",
                             f"--tokenizer={tiny_bert}", "--quiet"])
    assert "no 'text' column (columns: id, body)" in str(raised.value)
    pq.write_table(pa.table({"id": ["1"], "text": [5]}), path)
    with pytest.raises(UserError) as raised:
        corpus_pipeline.run([f"--input={path}", "--input_format=wikipedia-parquet", f"--output={tmp_path / 'p'}",
                             f"--tokenizer={tiny_bert}", "--quiet"])
    assert "column 'text' is int64, not text" in str(raised.value)
    assert not (tmp_path / "p" / "_SUCCESS").exists()


# ------------------------------------------------------------------------------------------ progress, summary
@pytest.mark.slow
def test_progress_and_summary_from_the_shell(tmp_path, tiny_bert, tiny_glove):
    temp = tmp_path / "tmp"
    temp.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.augment", "--runner=DirectRunner", f"--model={tiny_bert}",
         f"--glove={tiny_glove}", "--output=out", "--num_aug=2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=_env(TINYBERT_PROGRESS_INTERVAL="0", TMPDIR=str(temp)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(temp.glob("beam-temp*"))  # no Prism attempt's folder left behind (pipelines.runners)
    assert re.search(r"progress  masked-LM queries  [\d,]+ / [\d,]+ \(\d+%\)", result.stderr), result.stderr[-2000:]
    assert re.search(r"progress  examples augmented  [\d,]+ / 32", result.stderr)
    assert re.search(r"augment finished in [\d.]+ s -> out\n  inputs   1 file", result.stdout), result.stdout
    quiet = subprocess.run(
        [sys.executable, "-m", "pipelines.augment", "--runner=DirectRunner", f"--model={tiny_bert}",
         f"--glove={tiny_glove}", "--output=out2", "--num_aug=2", "--quiet"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_env(TINYBERT_PROGRESS_INTERVAL="0"))
    assert quiet.returncode == 0 and "progress" not in quiet.stderr and "augment finished" in quiet.stdout
    assert "Loading weights" not in quiet.stderr + result.stderr  # transformers' bar: not the run's news


# ------------------------------------------------------------------------------------------ datasets
def test_load_dataset_gives_a_train_split_with_every_row(tmp_path, tiny_bert, tiny_glove):
    import datasets
    manifest = _augment(tmp_path, tiny_bert, tiny_glove)
    loaded = datasets.load_dataset(str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"))
    assert list(loaded) == ["train"] and len(loaded["train"]) == manifest["outputs"]["data"]["totals"]["rows"]
    label = loaded["train"].features["label"]
    assert label.names == ["0", "1"] and label.int2str(loaded["train"][0]["label"]) in ("0", "1")

    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"Sentence {i} of document {d} is here .\n" for d in range(6) for i in range(5)
                            ).replace("is here .\nSentence 0", "is here .\n\nSentence 0"), encoding="utf-8")
    made = corpus_pipeline.run([f"--input={text}", f"--output={tmp_path / 'corpus'}", f"--tokenizer={tiny_bert}",
                                "--max_seq_len=32", "--num_shards=2", "--quiet"])
    loaded = datasets.load_dataset(str(tmp_path / "corpus"), cache_dir=str(tmp_path / "cache2"))
    assert list(loaded) == ["train"] and len(loaded["train"]) == made["counts"]["corpus"]["instances"]


# ------------------------------------------------------------------------------------------ the user's own task
@pytest.mark.slow
def test_own_three_label_task_from_the_shell(tmp_path):
    """A generic 3-label task (labels in no particular order): augment -> finetune a teacher -> intermediate ->
    prediction -> eval with only --model and --data, every step a console script from the shell."""
    import csv
    import random
    rng = random.Random(0)
    words = "a warm funny film the story is dull and slow bright music city night".split()
    for name, count in (("train.csv", 24), ("dev.csv", 6)):
        with open(tmp_path / name, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["premise", "hypothesis", "gold"])
            for i in range(count):
                writer.writerow([" ".join(rng.choice(words) for _ in range(6)),
                                 " ".join(rng.choice(words) for _ in range(5)), ("yes", "no", "neutral")[i % 3]])
    task = "--task generic --text_columns premise,hypothesis --label_column gold --label_list yes,no,neutral"
    steps = [
        "tinybert-demo-assets --output assets",
        f"tinybert-augment {task} --input train.csv --model assets/bert --glove assets/glove.txt --num_aug 2 "
        "--output aug --quiet",
        f"tinybert-augment {task} --input train.csv --model assets/bert --glove assets/glove.txt --num_aug 0 "
        "--output orig --quiet",
        "tinybert-distill finetune --task generic --model assets/bert --data orig --dev dev.csv --output teacher "
        "--max_steps 4 --batch_size 8",
        "tinybert-distill task --stage intermediate --task generic --data aug --teacher teacher "
        "--student assets/student.json --output int --max_steps 3 --batch_size 8",
        "tinybert-distill task --stage prediction --task generic --data aug --teacher teacher --student int "
        "--output pred --max_steps 4 --batch_size 8 --dev dev.csv --eval_interval 2",
        "tinybert-distill eval --model pred/best --data dev.csv",
    ]
    for command in steps:
        result = _shell(command, tmp_path)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    evaluated = json.loads(re.search(r"\{.*\}", result.stdout, re.S).group(0))
    dev = evaluated["results"]["dev"]
    assert evaluated["task"] == "generic" and dev["examples"] == 6 and dev["malformed_rows"] == 0
    assert 0.0 <= dev["acc"] <= 1.0 and "macro_f1" in dev
    saved = json.loads((tmp_path / "pred" / "best" / "config.json").read_text())
    assert sorted(saved["label2id"]) == ["neutral", "no", "yes"] and saved["id2label"]["0"] == "yes"
