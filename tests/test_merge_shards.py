"""``studies.merge_shards``: shards run in separate folders gathered into one, where
``--summary-only`` then summarises them; shards of different runs and clashing files are refused."""

from __future__ import annotations

import json
import shutil
from functools import partial
from types import SimpleNamespace

from study_cli import run_study_cli

from studies import merge_shards

cli = partial(run_study_cli, "studies.patching")


def merge(*argv: str, check: bool = True):
    """``python -m studies.merge_shards *argv``, in process (its ``run_cli`` path): code, stdout, stderr."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = merge_shards.run_cli(merge_shards.parse, merge_shards.main, list(argv))
    if check:
        assert code == 0, err.getvalue()
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
ARGS = ("--limit", "1", "--hooks", "resid_pre", "--no-figures")


def test_shards_in_two_folders_merge_and_summarise(tmp_path):
    a, b, dest = tmp_path / "a", tmp_path / "b", tmp_path / "merged"
    cli(*ARGS, "--shard", "1/2", "--out", str(a))
    cli(*ARGS, "--shard", "2/2", "--out", str(b))
    proc = merge(str(dest), str(a), str(b))
    assert "copied 4 files" in proc.stdout and "studies.patching" in proc.stdout
    assert sorted(p.name for p in dest.iterdir()) == [
        "fingerprint.shard-1-of-2.json", "fingerprint.shard-2-of-2.json",
        "results.shard-1-of-2.jsonl", "results.shard-2-of-2.jsonl"]
    cli(*ARGS, "--summary-only", "--out", str(dest))
    assert (dest / "summary.csv").stat().st_size > 0
    assert "copied 0 files" in merge(str(dest), str(a), str(b)).stdout  # again: nothing new, no clash

    # a shard of another run (here: its fingerprint's options edited) is refused, before copying
    other = tmp_path / "other"
    shutil.copytree(b, other)
    record = json.loads((other / "fingerprint.shard-2-of-2.json").read_text())
    record["fingerprint"]["options"]["limit"] = 2
    (other / "fingerprint.shard-2-of-2.json").write_text(json.dumps(record))
    refused = merge(str(tmp_path / "fresh"), str(a), str(other), check=False)
    assert refused.returncode == 2 and "is not a shard of the run of" in refused.stderr and "limit 1 -> 2" in refused.stderr
    assert not (tmp_path / "fresh").exists()
    # a file already in DEST with other contents is refused
    (other / "fingerprint.shard-2-of-2.json").write_text((b / "fingerprint.shard-2-of-2.json").read_text())
    (other / "results.shard-2-of-2.jsonl").write_text("{}\n")
    clash = merge(str(dest), str(other), check=False)
    assert clash.returncode == 2 and "exists with other contents" in clash.stderr
