"""The project as a package: one version, the tested versions pinned, CI running README's commands, and a wheel
that fits an environment already holding other versions of its dependencies within the stated ranges."""

import json
import os
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _pins() -> dict:
    """constraints.txt as {canonical name: version}; every line that is not a comment is NAME==VERSION."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, separator, version = line.partition("==")
            assert separator and re.fullmatch(r"[\w.]+", version), f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def _requirements() -> list:
    """Every requirement of pyproject.toml: the dependencies and every extra's."""
    project = PYPROJECT["project"]
    extras = project.get("optional-dependencies", {})
    return [Requirement(text) for text in project["dependencies"] + [t for group in extras.values() for t in group]]


def _lower_bound(name: str) -> str:
    """The version a `NAME>=VERSION` requirement of pyproject.toml starts at."""
    bounds = [spec.version for req in _requirements() if canonicalize_name(req.name) == name
              for spec in req.specifier if spec.operator == ">="]
    assert bounds, f"pyproject.toml states no lower bound for {name}"
    return bounds[0]


def _readme_block(name: str) -> str:
    """The fenced block after README.md's `<!-- test: NAME ... -->` marker."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- test: %s\b[^>]*-->\s*```bash\n(.*?)```" % re.escape(name), text, re.S)
    assert match, f"README.md has no block marked <!-- test: {name} -->"
    return match.group(1).strip()


def test_one_version_for_the_package_and_the_manifests():
    import contract
    from contract import layout
    assert layout.CODE_VERSION == contract.__version__
    assert "version" in PYPROJECT["project"]["dynamic"] and "version" not in PYPROJECT["project"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "contract.__version__"}


def test_constraints_pin_every_requirement_within_its_range():
    pins = _pins()
    assert canonicalize_name(PYPROJECT["project"]["name"]) not in pins
    assert pins["torch"] == "2.13.0"  # no looser pin: a CUDA build of several GB would come with it
    for requirement in _requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt has no pin for {requirement.name}"
        assert requirement.specifier.contains(pins[name], prereleases=True), (str(requirement), pins[name])


def test_ci_runs_the_readme_set_up_and_test_command():
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()]
    set_up = [step.strip() for step in _readme_block("quick-start").split("&&")][:2]
    assert set_up[0] == "python3 -m venv .venv" and "-c constraints.txt" in set_up[1], set_up
    test_command = _readme_block("tests")
    for line in set_up + [test_command]:
        assert line in ci_lines, f".ci/run does not run README's `{line}`"


@pytest.mark.slow
def test_the_wheel_keeps_the_numpy_and_pandas_already_installed(tmp_path):
    """Into a venv holding numpy and pandas at our lower bounds (not the pinned versions), `pip install` of the wheel
    (constraints for torch only, to keep its CPU build) installs neither again. `--dry-run` resolves without
    installing torch and the rest."""
    wheel_dir = tmp_path / "wheel"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(wheel_dir), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel, = wheel_dir.glob("tinybert_data-*.whl")

    pins = _pins()
    present = {name: _lower_bound(name) for name in ("numpy", "pandas")}
    assert all(present[name] != pins[name] for name in present), (present, "the pins: nothing else to test")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the venv's packages only, not the tree
    installed = subprocess.run(pip + ["install", "-q"] + [f"{n}=={v}" for n, v in present.items()],
                               capture_output=True, text=True, timeout=600, env=env)
    if installed.returncode != 0 and re.search(r"Could not find a version|No matching distribution|"
                                               r"Failed to establish|Network is unreachable", installed.stderr):
        pytest.skip(f"no package registry reachable: {installed.stderr.strip().splitlines()[-1]}")
    assert installed.returncode == 0, installed.stderr[-2000:]

    torch_only = tmp_path / "torch-constraint.txt"
    torch_only.write_text(f"torch=={pins['torch']}\n")
    report = tmp_path / "report.json"
    dry_run = subprocess.run(pip + ["install", "--dry-run", "-q", "--report", str(report), "-c", str(torch_only),
                                    f"{wheel}[datasets]"], capture_output=True, text=True, timeout=900, env=env)
    assert dry_run.returncode == 0, dry_run.stderr[-3000:]
    would_install = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
                     for item in json.loads(report.read_text())["install"]}
    assert "tinybert-data" in would_install and would_install["torch"].startswith(pins["torch"]), would_install
    replaced = {name: would_install[name] for name in present if name in would_install}
    assert not replaced, f"installing the wheel would replace {replaced} (installed: {present})"
