"""Device choice for the masked-LM workers (no GPU needed: torch.cuda is monkeypatched), and the precision probe."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from augment import mlm
from pipelines import augment as augment_pipeline
from pipelines.augment.resources import choose_device
from pipelines import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_two_workers_get_different_gpus(two_gpus, tmp_path):
    # Each open() is its own open file description, so two claims in one process contend like two processes.
    first, first_claim = choose_device("auto", claim_dir=str(tmp_path))
    second, second_claim = choose_device("cuda", claim_dir=str(tmp_path))
    assert (first, second) == ("cuda:0", "cuda:1")
    # A worker that ends (or drops its model) frees its GPU for the next one.
    first_claim.close()
    third, third_claim = choose_device("auto", claim_dir=str(tmp_path))
    assert third == "cuda:0"
    # More workers than GPUs: the rule falls back to the process id.
    fourth, fourth_claim = choose_device("auto", claim_dir=str(tmp_path))
    assert fourth == f"cuda:{os.getpid() % 2}" and fourth_claim is None
    second_claim.close()
    third_claim.close()


def test_another_process_takes_the_next_gpu(two_gpus, tmp_path):
    mine, claim = choose_device("auto", claim_dir=str(tmp_path))
    code = textwrap.dedent(f"""
        import torch
        torch.cuda.is_available = lambda: True
        torch.cuda.device_count = lambda: 2
        from pipelines.augment.resources import choose_device
        print(choose_device("auto", claim_dir={str(tmp_path)!r})[0])
    """)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert (mine, child.stdout.strip().splitlines()[-1]) == ("cuda:0", "cuda:1")
    claim.close()


def test_a_pinned_gpu_and_the_cpu_are_taken_as_given(two_gpus, tmp_path):
    assert choose_device("cuda:1", claim_dir=str(tmp_path)) == ("cuda:1", None)
    assert choose_device("cpu", claim_dir=str(tmp_path)) == ("cpu", None)
    assert os.listdir(tmp_path) == []  # nothing claimed


def test_auto_without_a_gpu_is_the_cpu(no_gpu, tmp_path):
    assert choose_device("auto", claim_dir=str(tmp_path)) == ("cpu", None)


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_is_refused_in_one_line(no_gpu, tmp_path, tiny_bert, device):
    with pytest.raises(cli.UserError, match=f"--device {device}: no CUDA GPU") as error:
        augment_pipeline.run([f"--model={tiny_bert}", "--glove=none", f"--device={device}",
                              f"--output={tmp_path / 'o'}"])
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("device, message", [("cuda:2", "torch sees 2 GPU"), ("gpu", "must be auto, cpu, cuda")])
def test_a_device_that_is_not_there_is_refused(two_gpus, tmp_path, tiny_bert, device, message):
    with pytest.raises(cli.UserError, match=message):
        augment_pipeline.run([f"--model={tiny_bert}", "--glove=none", f"--device={device}",
                              f"--output={tmp_path / 'o'}"])
    assert not (tmp_path / "o").exists()  # refused before the output is claimed


def test_batch_tokens_default_by_device(tiny_bert):
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    model = AutoModelForMaskedLM.from_pretrained(tiny_bert).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    assert mlm.MaskedLMScorer(model, tokenizer, max_batch_tokens=None).max_batch_tokens == 8192
    assert mlm.MaskedLMScorer(model, tokenizer, max_batch_tokens=1024).max_batch_tokens == 1024
    assert mlm.default_batch_tokens("cuda:1") == 65536


def test_bf16_autocast_and_bf16_weights_both_answer(tiny_bert):
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    model = AutoModelForMaskedLM.from_pretrained(tiny_bert).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    pieces = tokenizer("a warm , funny and thoughtful film", add_special_tokens=False)["input_ids"]
    queries = mlm.window_queries(pieces, range(len(pieces)))
    exact = mlm.MaskedLMScorer(model, tokenizer, top_k=15).candidates(queries)
    for autocast in (False, True):
        low = mlm.MaskedLMScorer(model, tokenizer, top_k=15, precision="bf16", bf16_autocast=autocast)
        answers = low.candidates(queries)
        assert set(answers) == set(exact) and all(answers.values())
    # The fp32 path is untouched by the bf16 copies (the head shares the embedding weight).
    assert mlm.MaskedLMScorer(model, tokenizer, top_k=15).candidates(queries) == exact


def test_precision_paths_from_cpu_flags():
    assert mlm.describe_precisions(["avx512f", "avx512_bf16", "avx512_vnni"]) == {
        "fp32": "native", "bf16": "native (avx512_bf16)", "int8": "native (avx512_vnni)"}
    assert mlm.describe_precisions(["amx_bf16", "avx512_bf16", "amx_int8"])["bf16"] == "native (amx_bf16)"
    assert mlm.describe_precisions(["avx2", "fma"]) == {
        "fp32": "native", "bf16": "emulated", "int8": "no VNNI (slower int8 GEMMs)"}
    assert set(mlm.describe_precisions()) == {"fp32", "bf16", "int8"}  # this machine, whatever it has


@pytest.mark.slow
def test_the_prepared_gpu_check_runs_in_smoke_mode(tmp_path, shared_data):
    """bench/gpu_check.sh measures a GPU machine in one run with a time limit per step: every step must work, so its
    --smoke mode (tiny sizes, on the CPU) runs here the way it is started on a GPU machine."""
    env = {**os.environ, "OUT": str(tmp_path / "gpu-check"), "PYTHON": sys.executable,
           "TINYBERT_SHARED_DATA": str(shared_data)}
    result = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_check.sh"), "--smoke"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads((tmp_path / "gpu-check" / "results.json").read_text())
    assert [step[:2] for step in results["steps"]] == [["env", "rc=0"], ["test_devices", "rc=0"],
                                                      ["scorer", "rc=0"], ["pipeline", "rc=0"]], results["steps"]
    assert results["scorer"]["rates"] and results["pipeline"]["fp32"]["identical_lists"] > 0
    assert results["pipeline"]["fp32_split_s"]["of which the encoder"] >= 0
