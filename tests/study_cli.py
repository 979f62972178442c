"""Running a study as its user does: ``python -W error -m studies.NAME ...`` in a subprocess
from the repository root, and reading the rows it wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_study_cli(module: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -W error -m module *args``; with ``check``, assert it exited 0 (showing its stderr)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-W", "error", "-m", module, *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def rows_of(folder: Path) -> list[dict]:
    """The rows of ``folder/results.jsonl``, in the order written."""
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
