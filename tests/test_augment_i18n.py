"""--word_rule unicode (letters of any script, source spacing kept), --stop_words, --glove none."""

import gzip
import json
import pathlib
import random
import re

import pyarrow.parquet as pq
import pytest

from contract.errors import UserError

from augment.algorithm import augment_sentence
from augment.words import STOP_WORDS, WordRule, WordSplitter, is_candidate_word, is_letter_word
from pipelines import augment as augment_pipeline
from pipelines import demo_assets

# Written for this project: German and French sentences with umlauts, eszett, accents and French punctuation spacing.
EUROPEAN_TEXTS = [
    "Die Brücke über den Fluss ist alt, aber schön.",
    "Wir gehen heute Abend die Straße entlang zum Bahnhof.",
    "Im Sommer fahren wir über die Alpen nach Süden.",
    "Große Bäume stehen vor dem Rathaus ; es regnet nicht.",
    "Das Mädchen liest ein Buch über Käse und Brötchen.",
    "Cet été, nous irons à la mer avec nos élèves.",
    "L'été dernier était très chaud ! Vraiment ?",
    "Le café est fermé : revenez demain, s'il vous plaît.",
    "Où est la bibliothèque ? Elle est près de l'école.",
    "Les enfants mangent des crêpes après la fête.",
]


def _non_letters(text: str):
    """Everything a letter-word replacement must leave as it was: punctuation, digits, whitespace, in order."""
    return [char for char in text if not char.isalpha()]


# ------------------------------------------------------------------------------------------------ library
def test_unicode_rule_takes_letters_of_any_script():
    rule = WordRule.create("unicode")
    for word in ["über", "Straße", "été", "東", "タワー", "हिन्दी", "Москва", "film", "the"]:
        assert rule.is_candidate(word), word
    for word in ["3d", "co-op", ",", "，", "２", "l'", "", "ab1", "\u0301a"]:
        assert not rule.is_candidate(word), word
    stopped = WordRule.create("unicode", ["Der", "été"])
    assert not stopped.is_candidate("der") and not stopped.is_candidate("Été") and stopped.is_candidate("über")
    assert is_letter_word("हिन्दी") and not "हिन्दी".isalpha()  # vowel signs are marks, not letters


def test_reference_rule_is_the_reference_list_and_letters():
    rule = WordRule.create("reference")
    assert rule.stop_words == STOP_WORDS
    for word in ["film", "Film", "the", "naïve", "co-op", "3d", "東", "über", "'s"]:
        assert rule.is_candidate(word) == is_candidate_word(word), word


def test_split_with_offsets_gives_the_words_of_split_and_their_source_spans(tiny_bert):
    from transformers import AutoTokenizer
    splitter = WordSplitter(AutoTokenizer.from_pretrained(tiny_bert).backend_tokenizer)
    for text in ["Héllo WORLD naïve Café", "東京タワー in 東京", "tab\tand\u00a0nbsp\x00null", "It's (really)!"]:
        words, spans = splitter.split_with_offsets(text)
        assert words == splitter.split(text)
        assert [splitter.normalize(text[start:end]).strip() for start, end in spans] == words


def test_in_place_join_keeps_spacing_and_skips_whitespace_only_draws():
    original = "Die Brücke,  über den Fluss.\n東京は"
    words = ["die", "brücke", ",", "über", "den", "fluss", ".", "東", "京", "は"]
    offsets = [(0, 3), (4, 10), (10, 11), (13, 17), (18, 21), (22, 27), (27, 28), (29, 30), (30, 31), (31, 32)]
    candidates = {1: ["Hütte"], 3: ["unter"], 7: ["西"]}
    out = augment_sentence(original, words, candidates, num_aug=1, replace_prob=1.0, rng=random.Random(0),
                           offsets=offsets)
    assert [s.text for s in out] == [original, "Die Hütte,  unter den Fluss.\n西京は"]
    assert out[1].replaced_word_indices == (1, 3, 7)
    # a candidate equal to the (normalized) word keeps the source's spelling: no new row
    same = augment_sentence(original, words, {1: ["brücke"]}, num_aug=5, replace_prob=1.0,
                            rng=random.Random(0), offsets=offsets)
    assert [s.text for s in same] == [original]


# ------------------------------------------------------------------------------------------------ pipeline
def _run(tmp_path, model, data_path, *extra):
    out = tmp_path / "out"
    manifest = augment_pipeline.run(["--runner=DirectRunner", f"--model={model}", f"--input={data_path}",
                                     f"--output={out}", "--num_shards=1", "--task=generic", "--text_columns=text",
                                     "--label_column=label", "--id_column=id", "--word_rule=unicode", *extra])
    rows = []
    for f in manifest["outputs"]["data"]["files"]:
        rows += pq.read_table(out / f["path"]).to_pylist()
    return out, manifest, rows


def _write_jsonl(path, texts):
    with open(path, "w", encoding="utf-8") as handle:
        for index, text in enumerate(texts):
            handle.write(json.dumps({"id": f"e{index}", "text": text, "label": str(index % 2)},
                                    ensure_ascii=False) + "\n")
    return path


def _find_shared_file(name: str):
    """../shared/data/NAME above the project root (a git worktree sits one level deeper than the main checkout)."""
    root = pathlib.Path(__file__).resolve().parents[1]
    for folder in [root, *root.parents]:
        path = folder / "shared" / "data" / name
        if path.exists():
            return path
    pytest.skip(f"real test data {name} not present in shared/data above {root}")


@pytest.fixture(scope="module")
def zh_entries():
    path = _find_shared_file("zh-fortunes-sample.txt.gz")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    return [entry.strip("\n") for entry in re.split(r"\n\s*\n", text) if entry.strip()]


@pytest.fixture(scope="module")
def zh_bert(tmp_path_factory, zh_entries):
    """A tiny BERT whose WordPiece vocab is trained on the Chinese sample (CJK characters: one piece each)."""
    tokenizer = demo_assets.wordpiece_tokenizer(texts=zh_entries, vocab_size=8000)
    return demo_assets.build_masked_lm(str(tmp_path_factory.mktemp("zh-bert")), tokenizer, layers=1, hidden=32,
                                       heads=2, intermediate=64, seed=5)


def test_chinese_characters_are_replaced_and_spacing_is_the_sources(tmp_path, zh_entries, zh_bert):
    cjk = re.compile(r"[\u4e00-\u9fff]")
    entries = [e for e in zh_entries if 2 <= len(cjk.findall(e)) and len(e) < 200][:30]
    stop_file = tmp_path / "stop.txt"
    stop_file.write_text("的\n了\n", encoding="utf-8")
    data = _write_jsonl(tmp_path / "zh.jsonl", entries)
    out, manifest, rows = _run(tmp_path, zh_bert, data, "--num_aug=4", f"--stop_words={stop_file}")
    header = manifest
    assert header["word_rule"] == "unicode" and header["glove"] is None
    assert header["stop_words"]["path"] == str(stop_file) and len(header["stop_words"]["sha256"]) == 64
    originals = {r["example_id"]: r["text"] for r in rows if r["aug_index"] == 0}
    assert len(originals) == len(entries)
    augmented = [r for r in rows if r["aug_index"] > 0]
    changed = {r["example_id"] for r in augmented if r["replaced_word_indices"]}
    assert len(changed) >= 0.9 * len(entries)
    for row in augmented:
        source = originals[row["example_id"]]
        assert "".join(row["text"].split()) != "".join(source.split())  # never a whitespace-only variant
        assert re.findall(r"\s+", row["text"]) == re.findall(r"\s+", source)  # no space inserted anywhere
        assert _non_letters(row["text"]) == _non_letters(source)  # punctuation where the source has it
        assert not re.search(r"[\u4e00-\u9fff]\s+[\u4e00-\u9fff]", row["text"]) or re.search(
            r"[\u4e00-\u9fff]\s+[\u4e00-\u9fff]", source)
        assert "的" not in [row["text"][i] for i in range(len(row["text"]))
                           if i < len(source) and source[i] == "的" and row["text"][i] != "的"]


def test_accented_latin_words_are_candidates_and_punctuation_spacing_is_kept(tmp_path):
    # A cased vocabulary (no accent stripping), so "über" stays "über".
    tokenizer = demo_assets.wordpiece_tokenizer(texts=EUROPEAN_TEXTS * 3, vocab_size=400, lowercase=False)
    model = demo_assets.build_masked_lm(str(tmp_path / "bert"), tokenizer, layers=1, hidden=32, heads=2,
                                        intermediate=64, seed=2)
    data = _write_jsonl(tmp_path / "eu.jsonl", EUROPEAN_TEXTS)
    out, manifest, rows = _run(tmp_path, model, data, "--num_aug=6", "--glove=none", "--emit_candidates")
    cands = [r for f in manifest["outputs"]["candidates"]["files"] for r in pq.read_table(out / f["path"]).to_pylist()]
    source = {r["word"]: r["source"] for r in cands}
    for word in ["über", "Straße", "été", "Brücke", "Mädchen", "fête", "schön"]:
        assert source[word] in ("mlm", "glove"), word
    for word in [",", "!", "?", ";", ":", "."]:
        assert source[word] == "none", word
    assert manifest["counts"]["stats"].get("words_without_glove", 0) == sum(1 for r in cands if r["source"] == "glove")
    originals = {r["example_id"]: r["text"] for r in rows if r["aug_index"] == 0}
    augmented = [r for r in rows if r["aug_index"] > 0]
    assert len({r["example_id"] for r in augmented}) >= 8
    for row in augmented:
        assert _non_letters(row["text"]) == _non_letters(originals[row["example_id"]])  # "plaît." / " ?" kept


def test_glove_none_with_reference_rule_keeps_multi_piece_words(tmp_path, tiny_bert):
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\nthe flibbertigibbet cinematography is murky and zzyzxqua .\t0\n",
                    encoding="utf-8")
    out = tmp_path / "out"
    manifest = augment_pipeline.run(["--runner=DirectRunner", f"--model={tiny_bert}", f"--input={data}",
                                     f"--output={out}", "--num_shards=1", "--glove=none", "--num_aug=3"])
    assert manifest["glove"] is None and manifest["word_rule"] == "reference" and manifest["stop_words"] is None
    assert manifest["counts"]["stats"]["words_without_glove"] >= 1


def test_bad_stop_words_file_stops_with_one_line(tmp_path, tiny_bert):
    bad = tmp_path / "stop.txt"
    bad.write_bytes(b"\xff\xfe bad")
    with pytest.raises(UserError, match="--stop_words file .* is not UTF-8"):
        augment_pipeline.run(["--runner=DirectRunner", f"--model={tiny_bert}", "--glove=none",
                              f"--output={tmp_path / 'out'}", f"--stop_words={bad}"])
    with pytest.raises(UserError, match="not found"):
        augment_pipeline.run(["--runner=DirectRunner", f"--model={tiny_bert}", "--glove=none",
                              f"--output={tmp_path / 'out2'}", f"--stop_words={tmp_path / 'missing.txt'}"])
