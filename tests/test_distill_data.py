"""The streaming reader: split by rank and worker, exact resume, dynamic padding, refusals."""

import json
import os

import numpy as np
import pytest
import torch

from distill import data, encoding
from tests import builders
from contract.errors import UserError


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return builders.make_tokenizer(str(tmp_path_factory.mktemp("tok")))


@pytest.fixture(scope="module")
def corpus(tokenizer, tmp_path_factory):
    return builders.write_corpus(str(tmp_path_factory.mktemp("corpus")), tokenizer, files=4, rows_per_file=37,
                                epochs=2, row_group_size=8)


def _open(corpus, tokenizer, **kwargs):
    options = dict(tokenizer=tokenizer, tokenizer_name="tok", batch_size=5, shuffle_buffer=16, seed=3)
    options.update(kwargs)
    return data.open_corpus(corpus, **options)[0]


def _serials(batches):
    return [builders.serial_of(row) for batch in batches for row in batch["input_ids"].tolist()]


def test_batches_are_padded_per_batch_with_segments(corpus, tokenizer):
    stream = _open(corpus, tokenizer)
    batch = next(iter(data.read_batches(stream)))
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == int(lengths.max())  # padded to the longest in the batch only
    for row in range(batch["input_ids"].shape[0]):
        ids = batch["input_ids"][row, :lengths[row]].tolist()
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        assert batch["input_ids"][row, lengths[row]:].eq(tokenizer.pad_token_id).all()
        types = batch["token_type_ids"][row].tolist()
        first_sep = ids.index(tokenizer.sep_token_id)
        assert types[:first_sep + 1] == [0] * (first_sep + 1)
        assert set(types[first_sep + 1:int(lengths[row])]) == {1}
        assert set(types[int(lengths[row]):]) <= {0}


@pytest.mark.parametrize("world_size,num_workers", [(1, 0), (2, 2)])
def test_every_row_read_once_split_by_rank_then_worker(corpus, tokenizer, world_size, num_workers):
    per_rank = []
    for rank in range(world_size):
        stream = _open(corpus, tokenizer, rank=rank, world_size=world_size, num_workers=num_workers)
        batches = list(data.read_batches(stream))
        per_rank.append(_serials(batches))
        workers = {int(b["worker"]) for b in batches}
        assert workers == set(range(max(num_workers, 1)))
        files = [f for w in range(max(num_workers, 1)) for f in stream.worker_files(0, w)]
        assert len(files) == len(set(files)) == 4 // world_size
    everything = [s for rank_serials in per_rank for s in rank_serials]
    assert sorted(everything) == list(range(4 * 37))  # epoch-0 holds serials 0..147, each once
    if world_size == 2:
        assert not set(per_rank[0]) & set(per_rank[1])


def test_shuffle_is_seeded_and_differs_per_epoch(corpus, tokenizer):
    first = _serials(data.read_batches(_open(corpus, tokenizer)))
    again = _serials(data.read_batches(_open(corpus, tokenizer)))
    other_seed = _serials(data.read_batches(_open(corpus, tokenizer, seed=4)))
    assert first == again and first != other_seed
    stream = _open(corpus, tokenizer)
    stream.set_position(data.ReaderPosition(epoch=1))
    second_epoch = _serials(data.read_batches(stream))
    assert sorted(second_epoch) == list(range(148, 296))  # epoch 1 reads the epoch-1 shards
    stream.set_position(data.ReaderPosition(epoch=2))
    third_epoch = _serials(data.read_batches(stream))
    assert sorted(third_epoch) == sorted(first) and third_epoch != first  # epoch-0 again, another order


@pytest.mark.parametrize("num_workers,cut", [(0, 7), (2, 5), (2, 12)])
def test_resume_from_a_position_continues_exactly(corpus, tokenizer, num_workers, cut):
    stream = _open(corpus, tokenizer, num_workers=num_workers)
    full = list(data.read_batches(stream))
    position = data.ReaderPosition()
    for batch in full[:cut]:
        position.advance(batch)
    resumed_stream = _open(corpus, tokenizer, num_workers=num_workers)
    resumed_stream.set_position(data.ReaderPosition.from_dict(json.loads(json.dumps(position.to_dict()))))
    resumed = list(data.read_batches(resumed_stream))
    assert len(resumed) == len(full) - cut
    for expected, got in zip(full[cut:], resumed):
        assert expected["input_ids"].equal(got["input_ids"])
        assert expected["token_type_ids"].equal(got["token_type_ids"])


def test_refuses_directory_without_success_marker(tokenizer, tmp_path):
    path = builders.write_corpus(str(tmp_path / "c"), tokenizer, files=2, rows_per_file=3, epochs=1, success=False)
    with pytest.raises(UserError, match="no _SUCCESS marker.*did not finish.*rerun"):
        _open(path, tokenizer)


def test_refuses_corpus_of_another_tokenizer(tokenizer, tmp_path):
    from transformers import BertTokenizerFast
    path = builders.write_corpus(str(tmp_path / "c"), tokenizer, files=2, rows_per_file=3, epochs=1)
    vocab = tmp_path / "other.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    other = BertTokenizerFast(vocab=str(vocab))
    with pytest.raises(UserError, match="vocab sha256.*regenerate the shards"):
        _open(path, other)


def test_refuses_missing_and_wrong_kind(tokenizer, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        _open(str(tmp_path / "nowhere"), tokenizer)
    augmented = builders.write_augmented(str(tmp_path / "aug"), tokenizer, examples=4, augmentations=1)
    with pytest.raises(UserError, match="'augmented-task' data but 'general-distillation' is needed"):
        _open(augmented, tokenizer)


def test_too_few_files_for_the_processes(tokenizer, tmp_path):
    path = builders.write_corpus(str(tmp_path / "c"), tokenizer, files=1, rows_per_file=3, epochs=1)
    with pytest.raises(UserError, match="fewer than the 2 training processes"):
        _open(path, tokenizer, world_size=2)


def test_pad_to_max_length_gives_fixed_width_batches(corpus, tokenizer, tmp_path):
    dynamic = next(iter(data.read_batches(_open(corpus, tokenizer))))
    fixed = next(iter(data.read_batches(_open(corpus, tokenizer, pad_to_max_length=True))))
    assert fixed["input_ids"].shape[1] == 32  # the corpus manifest's max_seq_len
    width = dynamic["input_ids"].shape[1]
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        assert torch.equal(fixed[name][:, :width], dynamic[name]) and not fixed[name][:, width:].any()
    path = builders.write_augmented(str(tmp_path / "aug"), tokenizer, examples=6, augmentations=1)
    stream, _ = data.open_augmented(path, tokenizer=tokenizer, max_seq_len=20, batch_size=4, shuffle_buffer=8,
                                    seed=0, pad_to_max_length=True)
    assert {b["input_ids"].shape[1] for b in data.read_batches(stream)} == {20}
    with pytest.raises(ValueError, match="more than the 3"):
        encoding.collate(encoding.EncodedRows(np.arange(4), np.array([0, 4]), np.array([2])), [0], 0, pad_to=3)


def test_augmented_rows_tokenized_on_the_fly(tokenizer, tmp_path):
    path = builders.write_augmented(str(tmp_path / "aug"), tokenizer, task="MRPC",
                                   text_fields=("sentence1", "sentence2"), examples=10, augmentations=2)
    stream, output = data.open_augmented(path, tokenizer=tokenizer, max_seq_len=12, batch_size=4,
                                         shuffle_buffer=8, seed=0)
    batches = list(data.read_batches(stream))
    assert sum(b["input_ids"].shape[0] for b in batches) == output.rows("data") == 30
    assert max(b["input_ids"].shape[1] for b in batches) <= 12
    assert all(b["token_type_ids"].max() == 1 for b in batches)  # sentence pairs


def test_glue_dev_readers_count_malformed_rows(tmp_path):
    from distill import glue
    path = builders.write_sst2_dev(str(tmp_path / "dev.tsv"), rows=6, malformed=2)
    sets = glue.dev_sets(glue.get_task("sst-2"), path)
    assert sets["sst-2"].malformed == 2 and len(sets["sst-2"].labels) == 6
    cola = tmp_path / "cola.tsv"
    cola.write_text("gj04\t1\t\tthe cat sat .\ngj04\t0\t*\tcat the sat .\nbroken\n")
    dev = glue.read_dev_tsv(glue.get_task("CoLA"), str(cola))
    assert dev.texts == [("the cat sat .",), ("cat the sat .",)] and dev.labels == [1, 0] and dev.malformed == 1
    mnli = tmp_path / "mnli"
    mnli.mkdir()
    header = "\t".join(f"c{i}" for i in range(12))
    for name, label in (("dev_matched.tsv", "neutral"), ("dev_mismatched.tsv", "entailment")):
        row = "\t".join(["x"] * 8 + ["premise", "hypothesis", "x", label])
        (mnli / name).write_text(f"{header}\n{row}\n")
    sets = glue.dev_sets(glue.get_task("MNLI"), str(mnli))
    assert sets["mnli-m"].labels == [2] and sets["mnli-mm"].labels == [1]
    stsb = tmp_path / "stsb.tsv"
    stsb.write_text("h\n" + "\t".join(["x"] * 7 + ["a b", "c d", "3.5"]) + "\n" + "\t".join(["x"] * 7 + ["a", "b", "n/a"]) + "\n")
    dev = glue.read_dev_tsv(glue.get_task("STS-B"), str(stsb))
    assert dev.labels == [3.5] and dev.malformed == 1


def test_glue_metrics_by_hand():
    from distill import glue
    predictions, labels = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    mrpc = glue.compute_metrics(glue.get_task("MRPC"), predictions, labels)
    assert mrpc["acc"] == pytest.approx(0.6) and mrpc["f1"] == pytest.approx(2 / 3)  # p = r = 2/3
    cola = glue.compute_metrics(glue.get_task("CoLA"), predictions, labels)
    tp, tn, fp, fn = 2, 1, 1, 1
    assert cola["mcc"] == pytest.approx((tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    stsb = glue.compute_metrics(glue.get_task("STS-B"), np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0]))
    assert stsb["pearson"] == pytest.approx(0.8) and stsb["spearmanr"] == pytest.approx(0.8)


@pytest.fixture(scope="module")
def stsb(tokenizer, tmp_path_factory):
    return builders.write_augmented(str(tmp_path_factory.mktemp("stsb")), tokenizer, task="STS-B",
                                   text_fields=("sentence1", "sentence2"), label_list=None, examples=30,
                                   augmentations=3, files=2)


def _open_stsb(path, tokenizer, **kwargs):
    options = dict(tokenizer=tokenizer, max_seq_len=16, batch_size=7, shuffle_buffer=16, seed=5,
                   regression_labels=True)
    options.update(kwargs)
    return data.open_augmented(path, **options)


def _labels_by_tokens(path, tokenizer):
    """What each (tokenized) row's label is, read straight from the Parquet files."""
    import pyarrow.parquet as pq
    expected = {}
    for name in sorted(os.listdir(os.path.join(path, "data"))):
        rows = pq.read_table(os.path.join(path, "data", name)).to_pylist()
        encoded = encoding.encode_texts(tokenizer, [(r["sentence1"], r["sentence2"]) for r in rows], 16)
        for index, row in enumerate(rows):
            ids = tuple(encoded.values[encoded.offsets[index]:encoded.offsets[index + 1]].tolist())
            expected.setdefault(ids, set()).add(np.float32(float(row["label"])))
    return expected


@pytest.mark.parametrize("num_workers", [0, 2])
def test_regression_labels_stay_with_their_rows_after_shuffling(stsb, tokenizer, num_workers):
    expected = _labels_by_tokens(stsb, tokenizer)
    stream, output = _open_stsb(stsb, tokenizer, num_workers=num_workers)
    batches = list(data.read_batches(stream))
    assert sum(b["labels"].shape[0] for b in batches) == output.rows("data") == 120
    read_order = []
    for batch in batches:
        assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == batch["input_ids"].shape[:1]
        lengths = batch["attention_mask"].sum(1).tolist()
        for row, length in enumerate(lengths):
            ids = tuple(batch["input_ids"][row, :length].tolist())
            assert np.float32(batch["labels"][row].item()) in expected[ids]
            read_order.append(ids)
    assert len(set(read_order)) > 100  # distinct texts: the check above pins each label to its own row
    # 7-row batches over 16-row chunks: many batches straddle two chunks (the _merge path).
    assert any(len(b["labels"]) == 7 for b in batches)


@pytest.mark.parametrize("num_workers,cut", [(0, 5), (2, 7)])
def test_resume_keeps_regression_labels_aligned(stsb, tokenizer, num_workers, cut):
    full = list(data.read_batches(_open_stsb(stsb, tokenizer, num_workers=num_workers)[0]))
    position = data.ReaderPosition()
    for batch in full[:cut]:
        position.advance(batch)
    stream = _open_stsb(stsb, tokenizer, num_workers=num_workers)[0]
    stream.set_position(data.ReaderPosition.from_dict(json.loads(json.dumps(position.to_dict()))))
    resumed = list(data.read_batches(stream))
    assert len(resumed) == len(full) - cut
    for expected, got in zip(full[cut:], resumed):
        assert expected["input_ids"].equal(got["input_ids"])
        assert expected["labels"].equal(got["labels"])


def test_label_columns_become_float_with_nan_for_missing(stsb, tokenizer, tmp_path):
    import pyarrow as pa
    strings = pa.chunked_array([["3.800", None], ["0", "n/a", "", "inf"]])
    got = encoding.float_labels(strings)
    assert got.dtype == np.float32
    assert got[:1].tolist() == [pytest.approx(3.8)] and got[2] == 0.0
    assert np.isnan(got[[1, 3, 4, 5]]).all()
    assert encoding.float_labels(pa.chunked_array([[1.5, None]])).tolist()[0] == 1.5
    # Labels only when asked, and never for a classification task's data.
    batch = next(iter(data.read_batches(_open_stsb(stsb, tokenizer, regression_labels=False)[0])))
    assert "labels" not in batch
    sst2 = builders.write_augmented(str(tmp_path / "sst2"), tokenizer, examples=4, augmentations=1)
    with pytest.raises(UserError, match="regression labels need a regression task"):
        _open_stsb(sst2, tokenizer)
