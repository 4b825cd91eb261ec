"""The candidate store: its keys (augment/store.py), its parts on disk (pipelines/augment/candidate_store.py), and
augmentation runs that read and fill it: outputs equal with and without it, warm or cold, damaged parts skipped,
scoring and drawing as two runs, two writers at once."""

import logging
import os
import pathlib
import shutil
import subprocess
import sys
import threading

import pytest

from augment import store as store_lib
from augment.mlm import MaskedQuery
from pipelines import augment as augment_pipeline
from pipelines.augment.candidate_store import CandidateStore

ROOT = pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------------ keys
def test_the_key_holds_the_query_and_the_settings_hold_precision_and_top_k():
    query = MaskedQuery((5, 6, 7), 1)
    assert store_lib.query_key(query) == store_lib.query_key(MaskedQuery((5, 6, 7), 1))
    others = [MaskedQuery((5, 6, 7), 2), MaskedQuery((5, 6, 8), 1), MaskedQuery((5, 6, 7, 9), 1)]
    assert len({store_lib.query_key(q) for q in [query, *others]}) == 4
    ids = {store_lib.settings_id(variant=v, top_k=k) for v in ("fp32", "bf16", "bf16-fused", "int8") for k in (5, 15)}
    assert len(ids) == 8
    base = store_lib.ModelFingerprint("c" * 64, "v" * 64, "w" * 64)
    changed = [store_lib.ModelFingerprint("d" * 64, "v" * 64, "w" * 64),
               store_lib.ModelFingerprint("c" * 64, "u" * 64, "w" * 64),
               store_lib.ModelFingerprint("c" * 64, "v" * 64, "x" * 64)]
    assert len({f.model_id for f in [base, *changed]}) == 4
    assert store_lib.ModelFingerprint.from_record(base.record("bert")) == base
    # a sentence's queries share one bucket, named by its input length
    assert len(store_lib.buckets_of([query, *others[:1]])) == 1
    assert store_lib.bucket_of((5, 6, 7)).startswith("009-")


def test_the_expected_variant_is_the_scorers(tiny_bert):
    """The store's settings folder is named before the weights load: the prediction equals the built scorer's."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    from augment.mlm import MaskedLMScorer, expected_variant
    model, tokenizer = AutoModelForMaskedLM.from_pretrained(tiny_bert), AutoTokenizer.from_pretrained(tiny_bert)
    for precision in ("fp32", "bf16", "int8"):
        built = MaskedLMScorer(model, tokenizer, precision=precision).variant
        assert expected_variant(precision, device_type="cpu", config=model.config) == built, precision
    assert expected_variant("bf16", device_type="cuda", config=model.config) == "bf16"


def test_parts_round_trip_and_a_truncated_part_is_refused():
    answers = {MaskedQuery((1, 2), 0): ["a", "b"], MaskedQuery((1, 2), 1): []}
    data = store_lib.encode_part(answers)
    assert data == store_lib.encode_part(dict(reversed(list(answers.items()))))  # key order: same bytes
    decoded = store_lib.decode_part(data)
    assert decoded == {store_lib.query_key(q): found for q, found in answers.items()}
    assert store_lib.decode_part(data, [store_lib.query_key(MaskedQuery((1, 2), 1))]) == {
        store_lib.query_key(MaskedQuery((1, 2), 1)): []}
    for damaged in (data[:len(data) // 2], b"", b"not parquet"):
        with pytest.raises(store_lib.DamagedPartError):
            store_lib.decode_part(damaged)


def test_default_root_follows_xdg():
    assert store_lib.default_root({"XDG_CACHE_HOME": "/c"}, "/home/u") == "/c/tinybert/candidates"
    assert store_lib.default_root({}, "/home/u") == "/home/u/.cache/tinybert/candidates"
    assert store_lib.default_root({"XDG_CACHE_HOME": "rel"}, "/home/u") == "/home/u/.cache/tinybert/candidates"


def test_two_writers_at_once_lose_nothing(tmp_path):
    """Threads writing the same buckets at once: every answer is found afterwards, no temporary file is read."""
    queries = [[MaskedQuery((w, s, 3), p) for s in range(20) for p in range(3)] for w in range(2)]

    def write(own):
        store = CandidateStore(str(tmp_path), "m", "s")
        for start in range(0, len(own), 7):
            store.write({q: [f"w{q.piece_ids[0]}", str(q.position)] for q in own[start:start + 7]})

    threads = [threading.Thread(target=write, args=(own,)) for own in queries]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [q for own in queries for q in own]
    found = CandidateStore(str(tmp_path), "m", "s").look_up(every)
    assert found == {q: [f"w{q.piece_ids[0]}", str(q.position)] for q in every}
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not store_lib.is_part_name(p.name)]


# ------------------------------------------------------------------------------------------------ pipelines
def _run(tmp_path, model, glove, name, *extra, store="store"):
    out = tmp_path / name
    store_flag = f"--candidate_store={tmp_path / store}" if store != "none" else "--candidate_store=none"
    manifest = augment_pipeline.run(["--runner=DirectRunner", f"--model={model}", f"--glove={glove}",
                                     f"--output={out}", "--num_shards=2", "--quiet", store_flag, *extra])
    return out, manifest


def _files(out):
    """Every output file's bytes but the manifest's (it records the run: its store counts, times)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _store_counts(manifest):
    counts = manifest["counts"]["store"]
    return counts["answers_from_store"], counts["answers_computed"]


@pytest.mark.slow
def test_outputs_equal_without_the_store_cold_and_warm(tmp_path, tiny_bert, tiny_glove):
    plain, manifest = _run(tmp_path, tiny_bert, tiny_glove, "plain", "--num_aug=4", store="none")
    assert "candidate_store" not in manifest
    queries = manifest["counts"]["stats"]["mlm_distinct_queries"]
    cold, manifest = _run(tmp_path, tiny_bert, tiny_glove, "cold", "--num_aug=4")
    assert _store_counts(manifest) == (0, queries) and manifest["candidate_store"]["store_bytes"] > 0
    warm, manifest = _run(tmp_path, tiny_bert, tiny_glove, "warm", "--num_aug=4")
    assert _store_counts(manifest) == (queries, 0)
    assert _files(plain) == _files(cold) == _files(warm) and any(name.endswith(".parquet") for name in _files(cold))
    # another seed, N and p draw other rows from the same answers: nothing is computed
    _, manifest = _run(tmp_path, tiny_bert, tiny_glove, "other", "--num_aug=7", "--seed=5", "--replace_prob=0.6")
    assert _store_counts(manifest) == (queries, 0)


@pytest.mark.slow
def test_precision_top_k_and_model_never_reuse_an_answer(tmp_path, tiny_bert, tiny_glove):
    from pipelines import demo_assets
    from transformers import AutoTokenizer
    _, manifest = _run(tmp_path, tiny_bert, tiny_glove, "base", "--num_aug=2")
    queries = manifest["counts"]["stats"]["mlm_distinct_queries"]
    for name, extra in (("int8", ["--precision=int8"]), ("bf16", ["--precision=bf16"]), ("top_k", ["--top_k=7"])):
        _, manifest = _run(tmp_path, tiny_bert, tiny_glove, name, "--num_aug=2", *extra)
        assert _store_counts(manifest) == (0, queries), name
    other = demo_assets.build_masked_lm(str(tmp_path / "other-bert"), AutoTokenizer.from_pretrained(tiny_bert),
                                        layers=2, hidden=32, heads=2, intermediate=64, seed=4)
    _, manifest = _run(tmp_path, other, tiny_glove, "other", "--num_aug=2")
    assert _store_counts(manifest) == (0, queries)
    assert len({p.parent.name for p in (tmp_path / "store").glob("*/model.json")}) == 2


@pytest.mark.slow
def test_a_truncated_part_is_skipped_with_one_warning(tmp_path, tiny_bert, tiny_glove, caplog):
    cold, manifest = _run(tmp_path, tiny_bert, tiny_glove, "cold", "--num_aug=4")
    parts = sorted((tmp_path / "store").rglob("part-*.parquet"), key=lambda p: (-p.stat().st_size, str(p)))
    damaged = parts[0]
    lost = len(store_lib.decode_part(damaged.read_bytes()))
    damaged.write_bytes(damaged.read_bytes()[:damaged.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        warm, manifest = _run(tmp_path, tiny_bert, tiny_glove, "warm", "--num_aug=4")
    warnings = [r.getMessage() for r in caplog.records if "damaged part" in r.getMessage()]
    assert len(warnings) == 1 and str(damaged) in warnings[0], warnings
    assert manifest["counts"]["store"]["answers_computed"] == lost
    assert _files(cold) == _files(warm)


@pytest.mark.slow
def test_score_only_then_draw_without_weights(tmp_path, tiny_bert, tiny_glove, capsys):
    plain, _ = _run(tmp_path, tiny_bert, tiny_glove, "plain", "--num_aug=3", store="none")
    scored, manifest = _run(tmp_path, tiny_bert, tiny_glove, "scored", "--score_only")
    assert manifest["kind"] == "candidate-store-fill" and not (scored / "data").exists()
    queries = manifest["counts"]["stats"]["mlm_distinct_queries"]
    assert _store_counts(manifest) == (0, queries)
    weightless = tmp_path / "weightless"
    shutil.copytree(tiny_bert, weightless)
    for weights in ("model.safetensors", "pytorch_model.bin"):
        (weightless / weights).unlink(missing_ok=True)
    drawn, manifest = _run(tmp_path, weightless, tiny_glove, "drawn", "--num_aug=3")
    assert _store_counts(manifest) == (queries, 0) and manifest["candidate_store"]["weightless"]
    assert _files(drawn) == _files(plain)
    # an answer the store lacks (another top_k was never scored): one line that names the flag
    capsys.readouterr()
    with pytest.raises(SystemExit):
        augment_pipeline.main(["--runner=DirectRunner", f"--model={weightless}", f"--glove={tiny_glove}",
                               f"--output={tmp_path / 'missing'}", "--num_aug=3", "--top_k=4", "--quiet",
                               f"--candidate_store={tmp_path / 'store'}"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "--score_only" in lines[0] and "lacks masked-LM answers" in lines[0], lines
    # no store at all: the weights are asked for
    with pytest.raises(SystemExit):
        augment_pipeline.main(["--runner=DirectRunner", f"--model={weightless}", f"--glove={tiny_glove}",
                               f"--output={tmp_path / 'nostore'}", "--num_aug=3", "--quiet",
                               f"--candidate_store={tmp_path / 'empty-store'}"])
    err = capsys.readouterr().err
    assert "holds no weights" in err and "--score_only" in err
    # --prune_store clears the model's answers (found by config and vocabulary for a folder without weights)
    assert augment_pipeline.run([f"--model={weightless}", f"--candidate_store={tmp_path / 'store'}",
                                 "--prune_store"]) is None
    assert "deleted the answers" in capsys.readouterr().out
    assert not list((tmp_path / "store").iterdir())


@pytest.mark.slow
def test_two_runs_at_once_share_a_store(tmp_path, tiny_bert, tiny_glove):
    """Two cold runs on one store at once (two processes): both outputs equal a run without the store, and a third
    run finds every answer."""
    plain, manifest = _run(tmp_path, tiny_bert, tiny_glove, "plain", "--num_aug=3", store="none")
    queries = manifest["counts"]["stats"]["mlm_distinct_queries"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    runs = [subprocess.Popen([sys.executable, "-m", "pipelines.augment", "--runner=DirectRunner",
                              f"--model={tiny_bert}", f"--glove={tiny_glove}", f"--output={tmp_path / name}",
                              "--num_shards=2", "--quiet", "--num_aug=3", f"--candidate_store={tmp_path / 'store'}"],
                             env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for name in ("one", "two")]
    for process in runs:
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 0, output[-3000:]
    assert _files(tmp_path / "one") == _files(tmp_path / "two") == _files(plain)
    _, manifest = _run(tmp_path, tiny_bert, tiny_glove, "three", "--num_aug=3")
    assert _store_counts(manifest) == (queries, 0)


def test_a_store_inside_the_output_is_refused(tmp_path, tiny_bert, tiny_glove, capsys):
    with pytest.raises(SystemExit):
        augment_pipeline.main(["--runner=DirectRunner", f"--model={tiny_bert}", f"--glove={tiny_glove}",
                               f"--output={tmp_path / 'out'}", f"--candidate_store={tmp_path / 'out' / 'store'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--candidate_store" in err[0], err
