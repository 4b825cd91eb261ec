"""Both pipelines from the shell on a Dask cluster started from the shell, as docs/scaling.md tells users to.

`dask scheduler` and `dask worker` (2 processes, 1 thread each) on 127.0.0.1, started in a folder outside the
source tree with no PYTHONPATH: the workers import the project from the installed package. The pipelines run as
`python -m pipelines.augment|corpus --runner=DaskRunner --dask_client_address=...`, so the pipeline module is
`__main__` in the launcher, and their outputs must equal the DirectRunner's byte for byte.
"""

import contextlib
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests import builders

pytestmark = pytest.mark.slow

BIN = pathlib.Path(sys.executable).parent


def _env():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


@contextlib.contextmanager
def _shell_cluster(folder: pathlib.Path, warm=()):
    if (shutil.which("dask", path=str(BIN)) or shutil.which("dask")) is None:
        pytest.skip("the dask command is not installed")
    with builders.shell_dask_cluster(folder, _env(), warm=warm) as address:
        yield address


def _imported(address: str, modules):
    """{worker: whether it has imported every one of `modules`}."""
    import dask.distributed
    with dask.distributed.Client(address, timeout=60) as client:
        return client.run(lambda: all(name in sys.modules for name in modules))


def _timers(address: str):
    """The period (ms) of the tick and profile timers of the cluster's scheduler, nannies and workers."""
    import dask.distributed

    def timers(server):
        return {name: callback.callback_time for name, callback in server.periodic_callbacks.items()
                if name in ("tick", "profile")}
    with dask.distributed.Client(address, timeout=60) as client:
        return {"scheduler": client.run_on_scheduler(lambda dask_scheduler: timers(dask_scheduler)),
                "nannies": list(client.run(lambda dask_worker: timers(dask_worker), nanny=True).values()),
                "workers": list(client.run(lambda dask_worker: timers(dask_worker)).values())}


def _files(out: pathlib.Path):
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()
            and p.name != "manifest.json"}  # the manifest holds the output path


def _run(cwd, *argv):
    result = subprocess.run([sys.executable, "-m", *argv], cwd=cwd, capture_output=True, text=True, timeout=600,
                            env=_env())
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_both_pipelines_on_a_cluster_started_from_the_shell(tmp_path, tiny_bert, tiny_glove):
    work = tmp_path / "work"
    work.mkdir()
    corpus_text = work / "corpus.txt"
    corpus_text.write_text("".join(f"Sentence {i} of document {d} says something new .\n"
                                   + ("\n" if i == 4 else "") for d in range(8) for i in range(5)), encoding="utf-8")
    augment_args = ["pipelines.augment", f"--model={tiny_bert}", f"--glove={tiny_glove}", "--num_aug=3",
                    "--num_shards=2", "--quiet"]
    corpus_args = ["pipelines.corpus", f"--input={corpus_text}", f"--tokenizer={tiny_bert}", "--max_seq_len=24",
                   "--num_shards=2", "--epochs=2", "--docs_per_bucket=3", "--quiet"]
    _run(work, *augment_args, "--runner=DirectRunner", "--output=direct-aug")
    _run(work, *corpus_args, "--runner=DirectRunner", "--output=direct-corpus")
    with _shell_cluster(tmp_path, warm=("augment", "corpus")) as address:
        # `--preload pipelines.augment.worker --preload pipelines.corpus.worker`: their modules before any run.
        from pipelines.local_cluster import WORKER_MODULES
        modules = [*WORKER_MODULES["pipelines.augment"], *WORKER_MODULES["pipelines.corpus"], "torch"]
        assert set(_imported(address, modules).values()) == {True}
        # The preloads on the scheduler, the nannies and the workers slowed their event loops' idle timers.
        assert _timers(address) == {"scheduler": {"tick": 1000}, "nannies": [{"tick": 1000}] * 2,
                                    "workers": [{"tick": 1000, "profile": 100}] * 2}
        _run(work, *augment_args, "--runner=DaskRunner", f"--dask_client_address={address}", "--output=dask-aug")
        _run(work, *corpus_args, "--runner=DaskRunner", f"--dask_client_address={address}", "--output=dask-corpus")
    for name in ("aug", "corpus"):
        direct, dask = _files(work / f"direct-{name}"), _files(work / f"dask-{name}")
        assert sorted(direct) == sorted(dask) and "_SUCCESS" in direct
        for path in direct:
            assert direct[path] == dask[path], (name, path)


def _assert_quiet_and_the_same(local, direct_out, local_out) -> None:
    """No line of the cluster's (or its fork server's) on stderr; every output file equals the DirectRunner's."""
    assert not [line for line in local.stderr.splitlines() if "distributed" in line or "WARNING" in line], \
        local.stderr[-2000:]
    direct, dask = _files(direct_out), _files(local_out)
    assert sorted(direct) == sorted(dask) and "_SUCCESS" in direct
    for path in direct:
        assert direct[path] == dask[path], path


def test_augment_on_local_workers_from_the_shell(tmp_path, tiny_bert, tiny_glove):
    """The augmentation on `--local_workers 2` (workers forked from a server that imported torch and the
    masked-LM modules once): the DirectRunner's bytes, and nothing on stderr from the cluster or its fork server."""
    work = tmp_path / "work"
    work.mkdir()
    augment_args = ["pipelines.augment", f"--model={tiny_bert}", f"--glove={tiny_glove}", "--num_aug=3",
                    "--num_shards=2", "--candidate_store=none"]
    _run(work, *augment_args, "--quiet", "--output=direct")
    local = _run(work, *augment_args, "--local_workers=2", "--output=local")
    assert "augment" in local.stdout and "finished" in local.stdout, local.stdout
    _assert_quiet_and_the_same(local, work / "direct", work / "local")


def test_local_workers_from_the_shell(tmp_path, tiny_bert):
    """`--local_workers 2`: the command starts its own cluster of 2 worker processes and stops it; the same bytes
    as the DirectRunner; a worker's user error is one `error:` line; the output claim's rules are unchanged."""
    work = tmp_path / "work"
    work.mkdir()
    corpus_text = work / "corpus.txt"
    corpus_text.write_text("".join(f"Sentence {i} of document {d} says something new .\n"
                                   + ("\n" if i == 4 else "") for d in range(12) for i in range(5)),
                           encoding="utf-8")
    corpus_args = ["pipelines.corpus", f"--input={corpus_text}", f"--tokenizer={tiny_bert}", "--max_seq_len=24",
                   "--num_shards=2", "--epochs=2", "--docs_per_bucket=3", "--split_bytes=200"]
    _run(work, *corpus_args, "--quiet", "--output=direct")
    local = _run(work, *corpus_args, "--local_workers=2", "--output=local")
    assert "corpus finished" in local.stdout
    _assert_quiet_and_the_same(local, work / "direct", work / "local")

    again = subprocess.run([sys.executable, "-m", *corpus_args, "--local_workers=2", "--output=local"], cwd=work,
                           capture_output=True, text=True, timeout=600, env=_env())
    assert again.returncode == 1 and again.stderr.strip().startswith("error: ") and "--overwrite" in again.stderr

    # A zstd stream named .txt: the worker that reads it stops the run; the launcher prints its one line.
    damaged = work / "damaged.txt"
    damaged.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 64)
    failed = subprocess.run([sys.executable, "-m", "pipelines.corpus", f"--input={damaged}",
                             f"--tokenizer={tiny_bert}", "--local_workers=2", "--output=failed"], cwd=work,
                            capture_output=True, text=True, timeout=600, env=_env())
    assert failed.returncode == 1, failed.stderr[-2000:]
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "damaged.txt" in errors[0], failed.stderr[-2000:]
    assert "Traceback" not in failed.stderr
    assert not (work / "failed" / "_SUCCESS").exists()


def test_a_user_error_does_not_wait_on_a_cluster_that_does_not_answer(tmp_path, tiny_bert):
    """The runner starts connecting to --dask_client_address as the command starts; a command that then stops on a
    user error (here an output folder it did not write) says so in one line and exits, instead of waiting for dask's
    connect timeout (30 s) at exit."""
    work = tmp_path / "work"
    (work / "taken").mkdir(parents=True)
    (work / "taken" / "theirs.txt").write_text("not ours\n", encoding="utf-8")
    (work / "corpus.txt").write_text("One sentence here .\nAnother one there .\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.corpus", "--input=corpus.txt", f"--tokenizer={tiny_bert}",
         "--runner=DaskRunner", "--dask_client_address=tcp://127.0.0.1:9", "--output=taken"],
        cwd=work, capture_output=True, text=True, timeout=25, env=_env())  # a guard against the hang, not a timing
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "taken" in lines[0], result.stderr[-2000:]
    assert (work / "taken" / "theirs.txt").read_text(encoding="utf-8") == "not ours\n"
