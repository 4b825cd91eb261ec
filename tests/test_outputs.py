import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from contract.errors import UserError
from pipelines import outputs
from pipelines.outputs import shards

SCHEMA = pa.schema([("key", pa.int64()), ("text", pa.string())])


def _write(output_dir, rows, num_shards=3):
    shard_set = outputs.ShardSet("data", num_shards, SCHEMA, stats=lambda rs: {"chars": sum(len(r["text"]) for r in rs)})
    with TestPipeline() as p:
        stats = (p | beam.Create([(r["key"], r) for r in rows]) | outputs.WriteShards(str(output_dir), shard_set))
        reasons = p | "Reasons" >> beam.Create([("empty", 1), ("empty", 1), ("bad", 1)]) | outputs.CountByKey()
        _ = p | outputs.FinalizeOutput(output_dir=str(output_dir), header={"kind": "test"},
                                       shard_stats={"data": (shard_set, stats)}, counts={"rejects": reasons})


def test_keyed_shards_manifest_and_marker(tmp_path):
    rows = [{"key": i, "text": "x" * (i % 7)} for i in range(50)]
    _write(tmp_path / "a", list(reversed(rows)))
    _write(tmp_path / "b", rows)
    manifest = outputs.read_manifest(str(tmp_path / "a"))
    data = manifest["outputs"]["data"]
    assert [f["path"] for f in data["files"]] == [f"data/part-0000{i}-of-00003.parquet" for i in range(3)]
    assert data["totals"] == {"rows": 50, "chars": sum(len(r["text"]) for r in rows)}
    assert manifest["counts"]["rejects"] == {"bad": 1, "empty": 2}
    read_back = []
    for f in data["files"]:
        table = pq.read_table(tmp_path / "a" / f["path"])
        assert table.schema.equals(SCHEMA)
        keys = table.column("key").to_pylist()
        assert keys == sorted(keys)
        read_back += table.to_pylist()
        # The input order does not change a single byte.
        assert (tmp_path / "a" / f["path"]).read_bytes() == (tmp_path / "b" / f["path"]).read_bytes()
    assert sorted(read_back, key=lambda r: r["key"]) == rows
    assert json.loads((tmp_path / "a" / "manifest.json").read_text()) == manifest


def test_empty_shards_are_written(tmp_path):
    _write(tmp_path, [{"key": 1, "text": "a"}], num_shards=4)
    manifest = outputs.read_manifest(str(tmp_path))
    assert [f["rows"] for f in manifest["outputs"]["data"]["files"]].count(0) == 3
    for f in manifest["outputs"]["data"]["files"]:
        assert pq.read_table(tmp_path / f["path"]).schema.equals(SCHEMA)


def test_reader_refuses_unfinished_directory(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(UserError, match="no _SUCCESS marker"):
        outputs.read_manifest(str(tmp_path))


def test_claim_output_dir_refuses_a_finished_output_without_overwrite(tmp_path):
    _write(tmp_path, [{"key": 1, "text": "a"}])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "kind": "general-distillation"}))
    with pytest.raises(outputs.OutputExistsError, match="finished general-distillation output; pass --overwrite"):
        outputs.claim_output_dir(str(tmp_path), overwrite=False)
    run_id = outputs.claim_output_dir(str(tmp_path), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_IN_PROGRESS"]
    assert json.loads((tmp_path / "_IN_PROGRESS").read_text())["run_id"] == run_id


def test_rows_sharing_a_key_are_ordered_by_content():
    rows = [(2, {"t": "b"}), (1, {"t": "z"}), (2, {"t": "a"}), (0, {"t": "q"})]
    expected = [(0, {"t": "q"}), (1, {"t": "z"}), (2, {"t": "a"}), (2, {"t": "b"})]
    assert shards._sorted_by_key(rows) == expected
    assert shards._sorted_by_key(list(reversed(rows))) == expected
    assert shards._sorted_by_key([]) == []


def test_finalize_removes_temporaries_of_dead_writers(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ".tmp-0123abcd-part-00000-of-00003.parquet").write_bytes(b"half a file")
    _write(tmp_path, [{"key": 1, "text": "a"}])
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        f"part-0000{i}-of-00003.parquet" for i in range(3)]
