"""The output folder is claimed before any work (`_IN_PROGRESS`), and --overwrite deletes only our own output."""

import io
import json
import os
import socket
import subprocess
import sys

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystem import BeamIOError, FileMetadata, FileSystem
from apache_beam.testing.test_pipeline import TestPipeline

from contract import claim, layout
from contract.errors import ERRORS_SUBDIR
from contract.filesystem import LocalFilesystem
from pipelines import outputs

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA = pa.schema([("key", pa.int64()), ("text", pa.string())])


def _snapshot(root):
    """Every file and directory under root with its content, to show that nothing was touched."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs:
            found[os.path.relpath(os.path.join(directory, name), root) + "/"] = None
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, root)] = handle.read()
    return found


def _marker(path, *, pid, host=None, run_id="other-run", pid_start="unset"):
    marker = {"run_id": run_id, "host": host or socket.gethostname(), "pid": pid,
              "pid_start": claim._process_start(pid) if pid_start == "unset" else pid_start,
              "started": "2025-01-01T00:00:00+00:00", "argv": ["python", "-m", "pipelines.corpus"]}
    (path / "_IN_PROGRESS").write_text(json.dumps(marker))


def _our_output(path, kind="general-distillation"):
    """A finished output of ours, as the pipelines leave it."""
    (path / "epoch-0").mkdir(parents=True)
    (path / "epoch-0" / "part-00000-of-00001.parquet").write_bytes(b"rows")
    (path / "rejects").mkdir()
    (path / "rejects" / "part-00000-of-00001.parquet").write_bytes(b"rejects")
    manifest = {"format_version": layout.FORMAT_VERSION, "kind": kind,
                "outputs": {"epoch-0": {"subdir": "epoch-0"}, "rejects": {"subdir": "rejects"}}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "_SUCCESS").write_text("")


@pytest.fixture
def live_pid():
    process = subprocess.Popen(["sleep", "60"])
    yield process.pid
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def dead_pid():
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_fresh_directory_is_created_and_claimed(tmp_path):
    out = tmp_path / "a" / "out"
    run_id = outputs.claim_output_dir(str(out), overwrite=False, argv=["prog", "--output", str(out)])
    marker = json.loads((out / "_IN_PROGRESS").read_text())
    assert marker["run_id"] == run_id and marker["pid"] == os.getpid()
    assert marker["host"] == socket.gethostname() and marker["argv"] == ["prog", "--output", str(out)]
    assert marker["started"]
    assert sorted(p.name for p in out.iterdir()) == ["_IN_PROGRESS"]


def test_empty_directory_is_claimed(tmp_path):
    run_id = outputs.claim_output_dir(str(tmp_path), overwrite=False)
    assert json.loads((tmp_path / "_IN_PROGRESS").read_text())["run_id"] == run_id


@pytest.mark.parametrize("overwrite", [False, True])
def test_live_marker_is_refused_even_with_overwrite(tmp_path, live_pid, overwrite):
    _marker(tmp_path, pid=live_pid)
    (tmp_path / "epoch-0").mkdir()
    (tmp_path / "epoch-0" / "part-00000-of-00002.parquet").write_bytes(b"being written")
    before = _snapshot(tmp_path)
    with pytest.raises(outputs.OutputInUseError) as info:
        outputs.claim_output_dir(str(tmp_path), overwrite=overwrite)
    message = str(info.value)
    assert f"output directory {tmp_path} is in use by another run" in message and "\n" not in message
    assert f"host {socket.gethostname()}, pid {live_pid}, started 2025-01-01T00:00:00+00:00" in message
    assert _snapshot(tmp_path) == before


def test_marker_from_another_host_is_live(tmp_path, dead_pid):
    _marker(tmp_path, pid=dead_pid, host="elsewhere")
    with pytest.raises(outputs.OutputInUseError, match="host elsewhere.*delete .*_IN_PROGRESS by hand"):
        outputs.claim_output_dir(str(tmp_path), overwrite=True)


def test_stale_marker_needs_overwrite_then_is_replaced(tmp_path, dead_pid):
    _marker(tmp_path, pid=dead_pid)
    (tmp_path / "epoch-0").mkdir()
    (tmp_path / "epoch-0" / "part-00000-of-00002.parquet").write_bytes(b"half a run")
    (tmp_path / "epoch-0" / ".tmp-0123-part-00001-of-00002.parquet").write_bytes(b"half a file")
    before = _snapshot(tmp_path)
    with pytest.raises(outputs.OutputExistsError) as info:
        outputs.claim_output_dir(str(tmp_path), overwrite=False)
    message = str(info.value)
    assert "earlier run that did not finish" in message and str(tmp_path / "_IN_PROGRESS") in message
    assert f"pid {dead_pid}" in message and "pass --overwrite to replace it" in message
    assert _snapshot(tmp_path) == before
    run_id = outputs.claim_output_dir(str(tmp_path), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_IN_PROGRESS"]
    assert json.loads((tmp_path / "_IN_PROGRESS").read_text())["run_id"] == run_id


def test_reused_pid_is_stale(tmp_path, live_pid):
    _marker(tmp_path, pid=live_pid, pid_start="1")  # a live process, but not the one that wrote the marker
    outputs.claim_output_dir(str(tmp_path), overwrite=True)


def test_failed_run_leaves_its_marker(tmp_path):
    outputs.claim_output_dir(str(tmp_path), overwrite=False)  # a run in this process that then raised
    with pytest.raises(outputs.OutputExistsError, match="earlier run that did not finish.*pass --overwrite"):
        outputs.claim_output_dir(str(tmp_path), overwrite=False)
    outputs.claim_output_dir(str(tmp_path), overwrite=True)


def test_finished_output_needs_overwrite(tmp_path):
    _our_output(tmp_path, kind="augmented-task")
    (tmp_path / "README.md").write_text("dataset card")
    before = _snapshot(tmp_path)
    with pytest.raises(outputs.OutputExistsError) as info:
        outputs.claim_output_dir(str(tmp_path), overwrite=False)
    assert str(info.value) == (f"output directory {tmp_path} already holds a finished augmented-task output; pass "
                               "--overwrite to replace it or choose another --output")
    assert _snapshot(tmp_path) == before
    outputs.claim_output_dir(str(tmp_path), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_IN_PROGRESS"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_foreign_folder_is_refused_and_untouched(tmp_path, overwrite):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print('hello')\n")
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    before = _snapshot(tmp_path)
    with pytest.raises(outputs.OutputExistsError) as info:
        outputs.claim_output_dir(str(tmp_path), overwrite=overwrite)
    message = str(info.value)
    assert "holds files our runs did not write (e.g. .git/" in message and "nothing was deleted" in message
    assert "\n" not in message
    assert _snapshot(tmp_path) == before


def test_foreign_manifest_is_not_ours(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1, "kind": "something-else"}))
    with pytest.raises(outputs.OutputExistsError, match="did not write"):
        outputs.claim_output_dir(str(tmp_path), overwrite=True)
    assert (tmp_path / "manifest.json").exists()


def test_output_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "out.parquet"
    path.write_bytes(b"data")
    with pytest.raises(outputs.OutputExistsError, match="is a file, not a directory"):
        outputs.claim_output_dir(str(path), overwrite=True)
    assert path.read_bytes() == b"data"


@pytest.mark.parametrize("extra", ["notes.txt", "epoch-0/notes.txt", "rejects/sub/part-0.parquet"])
def test_unknown_file_in_our_output_is_refused_and_untouched(tmp_path, extra):
    _our_output(tmp_path)
    (tmp_path / extra).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / extra).write_text("mine")
    before = _snapshot(tmp_path)
    with pytest.raises(outputs.OutputExistsError) as info:
        outputs.claim_output_dir(str(tmp_path), overwrite=True)
    assert f"holds {extra}, which our runs never write; nothing was deleted" in str(info.value)
    assert _snapshot(tmp_path) == before


def test_overwrite_deletes_the_error_records_of_a_killed_run(tmp_path, dead_pid):
    _marker(tmp_path, pid=dead_pid)
    (tmp_path / ERRORS_SUBDIR).mkdir()
    (tmp_path / ERRORS_SUBDIR / "0123abcd.json").write_text('{"error": "InputError", "message": "bad"}')
    outputs.claim_output_dir(str(tmp_path), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_IN_PROGRESS"]


def test_the_filesystem_root_is_refused_without_a_walk(monkeypatch):
    def walk(*args, **kwargs):
        raise AssertionError("the whole filesystem was walked")
    monkeypatch.setattr(os, "walk", walk)
    with pytest.raises(outputs.OutputExistsError, match="is the root of the filesystem"):
        outputs.claim_output_dir("/", overwrite=True)


def test_the_claim_works_without_beam(tmp_path):
    """contract.claim on local paths, as a command without Beam (the trainer) would use it."""
    fs = LocalFilesystem()
    run_id = claim.claim_output_dir(str(tmp_path / "out"), fs=fs, overwrite=False)
    claim.check_claim(str(tmp_path / "out"), run_id, fs=fs)
    with pytest.raises(claim.OutputClaimLostError, match=f"was taken by run {run_id}"):
        claim.check_claim(str(tmp_path / "out"), "another-run", fs=fs)
    claim.release_claim(str(tmp_path / "out"), run_id, fs=fs)
    assert not (tmp_path / "out" / "_IN_PROGRESS").exists()


class _ObjectStore(FileSystem):
    """An object store in memory, as Beam sees gs:// or s3://: no directories, no exclusive create."""
    objects = {}

    @classmethod
    def scheme(cls):
        return "memstore"

    def join(self, base, *paths):
        return "/".join([base.rstrip("/"), *(path.strip("/") for path in paths)])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass

    def has_dirs(self):
        return False

    def _list(self, prefix):
        for path, data in sorted(self.objects.items()):
            if path.startswith(prefix):
                yield FileMetadata(path, len(data), 0.0)

    def create(self, path, mime_type=None, compression_type=None):
        objects = self.objects

        class _Object(io.BytesIO):
            def close(self):
                objects[path] = self.getvalue()
                super().close()
        return _Object()

    def open(self, path, mime_type=None, compression_type=None):
        if path not in self.objects:
            raise BeamIOError("open", {path: FileNotFoundError(path)})
        return io.BytesIO(self.objects[path])

    def copy(self, sources, targets):
        raise NotImplementedError

    def rename(self, sources, targets):
        for source, target in zip(sources, targets):
            if source not in self.objects:
                raise BeamIOError("rename", {(source, target): FileNotFoundError(source)})
            self.objects[target] = self.objects.pop(source)

    def exists(self, path):
        return path in self.objects

    def size(self, path):
        return len(self.objects[path])

    def last_updated(self, path):
        return 0.0

    def checksum(self, path):
        return str(len(self.objects[path]))

    def metadata(self, path):
        return FileMetadata(path, len(self.objects[path]), 0.0)

    def delete(self, paths):
        for path in paths:
            if path not in self.objects:
                raise BeamIOError("delete", {path: FileNotFoundError(path)})
            del self.objects[path]


def test_the_claim_on_an_object_store():
    _ObjectStore.objects.clear()
    out = "memstore://bucket/out"
    run_id = outputs.claim_output_dir(out, overwrite=False)
    assert json.loads(_ObjectStore.objects[f"{out}/_IN_PROGRESS"])["run_id"] == run_id
    outputs.check_claim(out, run_id)
    with pytest.raises(outputs.OutputExistsError, match="earlier run that did not finish"):
        outputs.claim_output_dir(out, overwrite=False)
    # A finished output of ours (with a folder placeholder) is replaced whole; a foreign object stops the claim.
    _ObjectStore.objects.clear()
    manifest = {"format_version": layout.FORMAT_VERSION, "kind": "general-distillation",
                "outputs": {"epoch-0": {"subdir": "epoch-0", "files": [{"path": "epoch-0/part-00000-of-00001.parquet",
                                                                        "rows": 1}]}}}
    _ObjectStore.objects.update({f"{out}/manifest.json": json.dumps(manifest).encode(), f"{out}/_SUCCESS": b"",
                                 f"{out}/epoch-0/": b"", f"{out}/epoch-0/part-00000-of-00001.parquet": b"rows"})
    assert outputs.read_manifest(out) == manifest
    _ObjectStore.objects[f"{out}/notes.txt"] = b"mine"
    with pytest.raises(outputs.OutputExistsError, match="holds notes.txt, which our runs never write"):
        outputs.claim_output_dir(out, overwrite=True)
    del _ObjectStore.objects[f"{out}/notes.txt"]
    run_id = outputs.claim_output_dir(out, overwrite=True)
    assert sorted(_ObjectStore.objects) == [f"{out}/_IN_PROGRESS"]
    outputs.release_claim(out, run_id)
    assert not _ObjectStore.objects


def _finalize(output_dir, run_id):
    shard_set = outputs.ShardSet("data", 2, SCHEMA)
    with TestPipeline() as p:
        stats = (p | beam.Create([(1, {"key": 1, "text": "a"})]) | outputs.WriteShards(str(output_dir), shard_set))
        _ = p | outputs.FinalizeOutput(output_dir=str(output_dir), header={"kind": "general-distillation"},
                                       shard_stats={"data": (shard_set, stats)}, run_id=run_id)


def test_finalize_writes_success_then_releases_the_claim(tmp_path):
    run_id = outputs.claim_output_dir(str(tmp_path), overwrite=False)
    _finalize(tmp_path, run_id)
    assert (tmp_path / "_SUCCESS").exists() and not (tmp_path / "_IN_PROGRESS").exists()
    assert outputs.read_manifest(str(tmp_path))["outputs"]["data"]["totals"]["rows"] == 1
    assert pq.read_table(tmp_path / "data" / "part-00000-of-00002.parquet").schema.equals(SCHEMA)


def test_finalize_writes_nothing_once_another_run_took_the_folder(tmp_path, live_pid):
    run_id = outputs.claim_output_dir(str(tmp_path), overwrite=False)
    _marker(tmp_path, pid=live_pid, run_id="the-other-run")  # the other run's --overwrite, while this one ran
    with pytest.raises(Exception, match="was taken by run the-other-run"):
        _finalize(tmp_path, run_id)
    assert not (tmp_path / "_SUCCESS").exists() and not (tmp_path / "manifest.json").exists()
    assert json.loads((tmp_path / "_IN_PROGRESS").read_text())["run_id"] == "the-other-run"


# ---------------------------------------------------------------------------------------------------------------
# The command line, as users run it


@pytest.fixture(scope="module")
def corpus_assets(tmp_path_factory):
    from pipelines import demo_assets
    root = tmp_path_factory.mktemp("claim-assets")
    lines = []
    for doc in range(40):
        lines += [f"Document {doc} starts with a line about rivers and trains.",
                  f"The second sentence of document {doc} is about the sea.", "Ships sail on it every day.", ""]
    text = "\n".join(lines) + "\n"
    (root / "corpus.txt").write_text(text, encoding="utf-8")
    tokenizer = demo_assets.wordpiece_tokenizer(texts=text.splitlines(), vocab_size=200)
    tokenizer.save_pretrained(str(root / "tokenizer"))
    return root


def _corpus_command(assets, output, *extra):
    command = [sys.executable, "-m", "pipelines.corpus", f"--input={assets / 'corpus.txt'}", f"--output={output}",
               f"--tokenizer={assets / 'tokenizer'}", "--num_shards=2", "--epochs=2", "--max_seq_len=32",
               "--runner=DirectRunner", *extra]
    env = {**os.environ, "PYTHONPATH": SOURCE_ROOT, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return command, env


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_two_runs_into_one_folder_at_once(tmp_path, corpus_assets):
    out = tmp_path / "out"
    command, env = _corpus_command(corpus_assets, out)
    runs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for _ in range(2)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    for run in runs:
        run.stdout.close()
        run.stderr.close()
    assert sorted(code == 0 for code, _ in results) == [False, True], results
    refused = next(stderr for code, stderr in results if code != 0)
    assert "Traceback" not in refused and len(_error_lines(refused)) == 1, refused
    assert str(out) in _error_lines(refused)[0]
    # The winner finished: _SUCCESS, no marker, and exactly the shards its manifest lists.
    assert (out / "_SUCCESS").exists() and not (out / "_IN_PROGRESS").exists()
    manifest = outputs.read_manifest(str(out))
    listed = sorted(f["path"] for output in manifest["outputs"].values() for f in output["files"])
    on_disk = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, files in os.walk(out) for f in files
                     if f.endswith(".parquet"))
    assert listed == on_disk
    for output in manifest["outputs"].values():
        for entry in output["files"]:
            assert pq.read_metadata(out / entry["path"]).num_rows == entry["rows"]
    assert manifest["counts"]["corpus"]["documents"] == 40


@pytest.mark.slow
def test_overwrite_on_a_foreign_folder_deletes_nothing(tmp_path, corpus_assets):
    decoy = tmp_path / "project"
    (decoy / "src").mkdir(parents=True)
    (decoy / "src" / "main.py").write_text("print('hello')\n")
    (decoy / ".git").mkdir()
    (decoy / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    before = _snapshot(decoy)
    command, env = _corpus_command(corpus_assets, decoy, "--overwrite")
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and len(_error_lines(result.stderr)) == 1, result.stderr
    assert "nothing was deleted" in _error_lines(result.stderr)[0]
    assert _snapshot(decoy) == before
