"""rlinterp installed as a user installs it (``pip install .``, not editable), used from outside
the repository: the toy pair and every file a study reads must ship with the package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What a source distribution holds; everything else (venvs, runs, .git) is left out of the copy.
SOURCES = ("pyproject.toml", "README.md", "interp", "probes", "tasks", "studies", "figures", "toy_pair",
           "bench", "models")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A folder holding only the installed package (``pip install --target``), built from a
    copy of the sources so that the build leaves nothing in the repository."""
    root = tmp_path_factory.mktemp("installed")
    src, target = root / "src", root / "site"
    src.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
        copy(REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                          if (REPO / name).is_dir() else {}))
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-compile", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return target


def run_outside(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -W error *args`` in ``cwd`` (outside the repository) with only ``target`` on PYTHONPATH."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-W", "error", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_installed_copy_loads_the_toy_pair(installed, tmp_path):
    code = ("import interp, studies; lm = interp.load('toy/base'); "
            "from toy_pair.tuned_lens import load; load(lm, 'base'); "  # the shipped tuned lens too
            "print(interp.__file__); print(studies.__file__); print(lm.n_layers)")
    where_interp, where_studies, n_layers = run_outside(installed, tmp_path, "-c", code).stdout.split()
    # The installed copy, not the repository (which an editable install may also put on sys.path).
    assert Path(where_interp).is_relative_to(installed) and Path(where_studies).is_relative_to(installed)
    assert int(n_layers) == 6


def test_installed_study_runs_outside_the_repository(installed, tmp_path):
    out = tmp_path / "run"
    run_outside(installed, tmp_path, "-m", "studies.ffn_capitals", "--pair", "toy", "--limit", "3",
                "--out", str(out))
    meta = json.loads((out / "meta.json").read_text())
    assert all(Path(meta["models"][m]).is_relative_to(installed) for m in ("base", "chat")), meta["models"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {r["model"] for r in rows} == {"base", "chat"} and len({r["item"] for r in rows}) == 3
    assert (out / "summary.csv").stat().st_size > 0


def test_missing_shipped_weights_are_named(tmp_path, monkeypatch):
    """An install without the weights says where they should be, not a hub-id error."""
    from interp import registry

    monkeypatch.setattr(registry, "PACKAGE_ROOT", tmp_path)
    with pytest.raises(registry.LoadError, match=f"no model at {tmp_path / 'models/toy/base'}.*toy_pair.train"):
        registry.PAIRS["toy"].source("base")
