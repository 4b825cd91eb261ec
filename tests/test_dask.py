"""Both pipelines on a real dask.distributed cluster (scheduler + 2 worker processes on 127.0.0.1)."""

import os
import pathlib

import pytest

from pipelines import augment as augment_pipeline
from pipelines import outputs

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dask_cluster():
    distributed = pytest.importorskip("dask.distributed")
    # Worker processes unpickle our DoFns: they must import the project.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None)
    try:
        yield cluster
    finally:
        cluster.close()


def _all_files(out: pathlib.Path):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_augment_on_dask_equals_direct_runner(tmp_path, tiny_bert, tiny_glove, dask_cluster):
    bad = tmp_path / "train.tsv"
    bad.write_bytes(augment_pipeline.pathlib.Path(augment_pipeline.SAMPLE_INPUT).read_bytes()
                    + b"\t1\nno label here\n")
    common = [f"--model={tiny_bert}", f"--glove={tiny_glove}", f"--input={bad}", "--num_aug=4", "--num_shards=3",
              "--emit_candidates"]
    direct = augment_pipeline.run(["--runner=DirectRunner", f"--output={tmp_path / 'direct'}"] + common)
    dask = augment_pipeline.run(["--runner=DaskRunner", f"--dask_client_address={dask_cluster.scheduler_address}",
                                 f"--output={tmp_path / 'dask'}"] + common)
    assert dask["counts"] == direct["counts"]
    assert dask["counts"]["rejects"] == {"empty_text": 1, "wrong_column_count": 1}
    assert dask["outputs"] == direct["outputs"]
    a, b = _all_files(tmp_path / "direct"), _all_files(tmp_path / "dask")
    assert sorted(a) == sorted(b)
    for name in a:
        if name != "manifest.json":  # holds the output path
            assert a[name] == b[name], name
