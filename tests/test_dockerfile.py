"""The SDK worker image's Dockerfile passes hadolint (no Docker engine is needed to lint it)."""

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -e '.[test]' brings it)")
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_the_tested_versions_and_the_project():
    text = (ROOT / "Dockerfile").read_text()
    beam_pin = next(line for line in (ROOT / "constraints.txt").read_text().splitlines()
                    if line.startswith("apache-beam=="))
    assert f"ARG BEAM_VERSION={beam_pin.split('==')[1]}" in text
    assert "FROM apache/beam_python3.11_sdk:${BEAM_VERSION}" in text
    assert "COPY pyproject.toml constraints.txt README.md ./" in text
    assert 'pip install -c constraints.txt --extra-index-url "${TORCH_INDEX}" .' in text
    for package in ("augment/", "contract/", "corpus/", "pipelines/", "distill/"):
        assert f"COPY {package} {package}" in text
