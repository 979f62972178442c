"""``--shard i/n`` divides a study's whole work list (every model, condition and chunk) into n
near-equal parts, a shard prints no summary, and merged shards summarise byte-identically to
the unsharded run (issue 10). Studies run as their users run them (``python -W error -m``)."""

from __future__ import annotations

import json
import shutil
from functools import partial

import pytest
from study_cli import run_study_cli

from studies import _shards, patching
from studies.ffn_capitals import KEY_FIELDS as FFN_KEYS

# four conditions of 3 items: one chunk each per model, the case where shard 2 used to do nothing
FFN = ("--limit", "3", "--prompting", "zero,one", "--context", "plain", "--no-figures")
PATCHING = ("--limit", "3", "--hooks", "resid_pre,resid_post", "--no-figures")


@pytest.mark.parametrize("n_chunks", [1, 2, 5, 18])
@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_shards_cover_the_work_once_in_near_equal_parts(n_chunks, count):
    plans = [_shards.shard_plan(n_chunks, _shards.Shard(i, count)) for i in range(1, count + 1)]
    units = [(m, c) for plan in plans for m, chunks in plan.items() for c in chunks]
    assert sorted(units) == sorted((m, c) for m in ("base", "chat") for c in range(n_chunks))  # all, once
    sizes = [sum(map(len, plan.values())) for plan in plans]
    assert max(sizes) - min(sizes) <= 1
    assert min(sizes) >= 1 or 2 * n_chunks < count  # a shard is empty only when there are fewer units than shards
    if count == 2:  # halves: one model each, so a shard loads one model
        assert plans[0]["chat"] == [] and plans[1]["base"] == []


def _shard_rows(folder, i, n) -> list[dict]:
    return [json.loads(line) for line in (folder / f"results.shard-{i}-of-{n}.jsonl").read_text().splitlines()]


def test_merged_shards_give_the_unsharded_summary(tmp_path):
    """ffn_capitals, the second shard run in another folder (another machine) and copied in."""
    cli = partial(run_study_cli, "studies.ffn_capitals", *FFN)
    whole, merged, elsewhere = tmp_path / "whole", tmp_path / "merged", tmp_path / "elsewhere"
    cli("--out", str(whole))
    first = cli("--out", str(merged), "--shard", "1/2")
    assert "shard 1 of 2" in first.stdout and "Same top tokens" not in first.stdout  # no whole-study report
    assert not (merged / "summary.csv").exists()
    early = cli("--out", str(merged), "--summary-only", check=False)  # shard 2 has not run: no partial summary
    assert early.returncode == 2 and "shard 2 of 2" in early.stderr and not (merged / "summary.csv").exists()
    second = cli("--out", str(elsewhere), "--shard", "2/2")
    assert "shard 2 of 2" in second.stdout and "--summary-only" not in second.stderr
    for name in ("results.shard-2-of-2.jsonl", "fingerprint.shard-2-of-2.json"):
        shutil.copy(elsewhere / name, merged / name)
    _assert_real_disjoint_shares(merged, FFN_KEYS)
    cli("--out", str(merged), "--summary-only")
    assert (merged / "summary.csv").read_bytes() == (whole / "summary.csv").read_bytes()


def test_merged_patching_shards_give_the_unsharded_summary(tmp_path):
    cli = partial(run_study_cli, "studies.patching", *PATCHING)
    cli("--out", str(tmp_path / "whole"))
    for i in (1, 2):
        proc = cli("--out", str(tmp_path / "merged"), "--shard", f"{i}/2")
        assert f"shard {i} of 2" in proc.stdout and "strongest cell" not in proc.stdout
        assert not (tmp_path / "merged" / "summary.csv").exists()
    _assert_real_disjoint_shares(tmp_path / "merged", patching.KEY_FIELDS)
    cli("--out", str(tmp_path / "merged"), "--summary-only")
    assert (tmp_path / "merged" / "summary.csv").read_bytes() == (tmp_path / "whole" / "summary.csv").read_bytes()


def _assert_real_disjoint_shares(folder, keys) -> None:
    a, b = _shard_rows(folder, 1, 2), _shard_rows(folder, 2, 2)
    assert a and b and len(a) == len(b)  # here: one model each, the same rows per model
    assert not {tuple(r[k] for k in keys) for r in a} & {tuple(r[k] for k in keys) for r in b}


def test_shards_of_different_runs_never_mix(tmp_path, capsys):
    def main(*args):
        status = patching.main([*PATCHING, "--limit", "2", *args])
        return status, capsys.readouterr().err

    assert main("--out", str(tmp_path / "a"), "--shard", "1/2")[0] == 0
    status, err = main("--out", str(tmp_path / "a"), "--shard", "2/2", "--seed", "1")
    assert status == 2 and "seed 0 -> 1" in err
    assert main("--out", str(tmp_path / "b"), "--shard", "2/2", "--seed", "1")[0] == 0
    for name in ("results.shard-2-of-2.jsonl", "fingerprint.shard-2-of-2.json"):
        shutil.copy(tmp_path / "b" / name, tmp_path / "a" / name)
    status, err = main("--out", str(tmp_path / "a"), "--summary-only")
    assert status == 2 and "was made with different settings" in err and "seed 1 -> 0" in err
    assert not (tmp_path / "a" / "summary.csv").exists()
