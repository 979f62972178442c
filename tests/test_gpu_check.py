"""``bench.gpu_check``: without a GPU it says what it would measure and exits 2; its CPU parts
(the device-map check with disk offload, the benchmarks at tiny sizes) run with ``--dry-run``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import gpu_check

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message of a machine without a GPU")
def test_without_gpu_it_says_what_it_would_measure():
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    err = proc.stderr
    assert err.startswith("error: no CUDA GPU on this machine") and "nothing was measured" in err
    for part in ("quantized loading", "device_map", "benchmarks on the GPU", "--device cpu --dry-run"):
        assert part in err
    if gpu_check._bnb() is None:
        assert "pip install -e .[quant]" in err
    assert "Traceback" not in err


def test_dry_run_measures_the_cpu_parts_and_says_so(tmp_path, capsys):
    out = tmp_path / "check.json"
    assert gpu_check.main(["--device", "cpu", "--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "DRY RUN on the CPU" in printed and "no GPU was measured" in printed
    record = json.loads(out.read_text())
    assert record["dry_run"] and record["device"] == "cpu"
    parts = {r["part"] for r in record["rows"]}
    assert parts == {"quantized", "device_map", "benchmark"}
    (quant,) = [r for r in record["rows"] if r["part"] == "quantized"]
    assert quant["status"] == "skipped"
    (offload,) = [r for r in record["rows"] if r["part"] == "device_map"]
    assert offload["status"] == "pass" and "'disk'" in offload["map"] and offload["captures_on"] == ["cpu"]
    assert offload["captures_max_abs"] <= 1e-5 and offload["sweep_max_abs"] <= 1e-5
    bench = [r for r in record["rows"] if r["part"] == "benchmark"]
    methods = {(r["benchmark"], r["method"]) for r in bench}
    assert ("capture", "TL 4.3 bridge run_with_cache") in methods
    assert ("patching", "TL 4.3 bridge get_act_patch_resid_pre") in methods
    assert all(r["ratio"] > 0 for r in bench)


def test_cpu_without_dry_run_is_refused(capsys):
    assert gpu_check.main(["--device", "cpu"]) == 2
    assert "add --dry-run" in capsys.readouterr().err
