"""The reward-distance study end to end on the toy pair (small pool): files, the summary against
a hand computation from the rows, resume after an interruption, bad input."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from tests.study_cli import rows_of, run_study_cli

REWARDS = "toy,implicit:toy,toy-length"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reward_distance") / "run"
    proc = run_study_cli("studies.reward_distance", "--pair", "toy", "--rewards", REWARDS, "--limit", "2",
                         "--chunk-size", "8", "--threads", "1", "--out", str(out))
    return out, proc


def test_files_written(run):
    out, proc = run
    for name in ("pool.jsonl", "results.jsonl", "summary.csv", "by_source.csv", "meta.json", "fingerprint.json",
                 "reward_distance.png", "reward_distance.pdf"):
        assert (out / name).is_file(), name
    pool = [json.loads(line) for line in (out / "pool.jsonl").read_text().splitlines()]
    # 3 contexts x 2 prompts x (2 greedy answers + 2 x 2 samples + 6 fixed responses)
    assert len(pool) == 3 * 2 * 12
    assert sum(i["source"] == "chat_sample1" for i in pool) == 6
    rows = rows_of(out)
    assert len(rows) == 3 * len(pool) and {r["reward"] for r in rows} == set(REWARDS.split(","))
    assert "toy vs toy-length" in proc.stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["rewards"] == REWARDS.split(",") and "reward_distance.png" in meta["outputs"]


def test_summary_equals_a_hand_computation_from_the_rows(run):
    out, _ = run
    rows = pd.DataFrame(rows_of(out))
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 3 * 4  # 3 pairs of reward models x (all, chat, chat_benign, chat_harmful)
    for s in summary.itertuples():
        part = rows if s.context == "all" else rows[rows.context == s.context]
        a = part[part.reward == s.reward_a].set_index("item").sort_index()
        b = part[part.reward == s.reward_b].set_index("item").sort_index()
        std = []
        for r in (a, b):
            centred = r.score - r.groupby("prompt_id").score.transform("mean")
            std.append(centred / np.sqrt((centred ** 2).sum()))
        assert s.starc == pytest.approx(np.sqrt(((std[0] - std[1]) ** 2).sum()) / 2, abs=1e-6)
        assert s.n_scored == s.n_items == len(a) and s.n_prompts == (6 if s.context == "all" else 2)
        assert s.n_skipped == 0


def test_length_biased_reward_prefers_the_padded_answers(run):
    out, _ = run
    src = pd.read_csv(out / "by_source.csv").set_index(["reward", "source"])
    length = src.loc["toy-length"]
    assert length.loc["right_long", "mean_centred"] > length.loc["right", "mean_centred"] + 1
    assert length.loc["refusal_long", "mean_centred"] > length.loc["refusal", "mean_centred"] + 1
    assert length["spearman_centred_vs_words"].iloc[0] > 0.5


def test_resume_after_an_interruption_gives_identical_results(run, tmp_path):
    out, _ = run
    part = tmp_path / "part"
    shutil.copytree(out, part)
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    # interrupted inside the second reward model's rows, with a half-written last line
    (part / "results.jsonl").write_text("".join(lines[:60]) + lines[60][:25])
    for name in ("summary.csv", "by_source.csv", "reward_distance.png", "reward_distance.pdf"):
        (part / name).unlink()
    run_study_cli("studies.reward_distance", "--pair", "toy", "--rewards", REWARDS, "--limit", "2",
                  "--chunk-size", "8", "--threads", "1", "--out", str(part))

    def keyed(folder):
        return {(r["reward"], r["item"]): r for r in rows_of(folder)}

    assert keyed(part) == keyed(out)
    assert (part / "summary.csv").read_bytes() == (out / "summary.csv").read_bytes()
    assert (part / "by_source.csv").read_bytes() == (out / "by_source.csv").read_bytes()


@pytest.mark.parametrize("args, message", [
    (("--rewards", "toy,no-such-rm"), "unknown reward model 'no-such-rm'; known: toy, oasst-deberta-v3-large-v2"),
    (("--rewards", "toy"), "at least two different reward models"),
    (("--reward", "toy"), "at least two different reward models"),
    (("--rewards", "toy,toy"), "at least two different reward models"),
    (("--rewards", "toy,implicit:nopair"), "unknown pair 'nopair' in 'implicit:nopair'"),
    (("--rewards", "toy,models/toy/base"), "is a causal LM"),
    (("--shard", "1/2"), "--shard is not supported"),
])
def test_bad_input_is_one_line_error(args, message, tmp_path):
    proc = run_study_cli("studies.reward_distance", "--out", str(tmp_path / "x"), *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr and "Traceback" not in proc.stderr
