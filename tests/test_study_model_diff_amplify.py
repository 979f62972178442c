"""studies.model_diff's opt-in amplify part on a tiny random pair saved to disk."""

import pandas as pd

from interp.diff import token_shift as ts
from studies.model_diff import parse_args
from study_cli import rows_of
from tests.conftest import PROMPTS
from tests.test_study_model_diff_tokens import _paths, cli, prompt_file, random_pair  # noqa: F401 (fixtures)

AMP = ("--parts", "amplify", "--amp-alphas", "0,1,4", "--amp-modes", "greedy,sample", "--amp-prompts", "0",
       "--amp-max-new-tokens", "4", "--shift-chat-template", "off", "--adl-targets", "the cat", "--no-figures")


def test_amplify_is_opt_in():
    assert "amplify" not in parse_args([]).parts
    assert parse_args(["--parts", "all"]).parts[-1] == "amplify"
    assert parse_args(["--parts", "amplify"]).parts == ("amplify",)


def test_amplify_alpha_0_is_chat_and_resumes(random_pair, prompt_file, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    argv = (*_paths(random_pair), *AMP, "--shift-prompts", str(prompt_file), "--out", str(out))
    proc = cli(*argv)
    assert "both models" in proc.stdout and "amplify refusal rate" in proc.stdout
    table = pd.read_csv(out / "amplify.csv", keep_default_na=False)
    assert list(table.columns) == ["prompt_id", "prompt_kind", "alpha", "mode", "text", "refused"]
    assert len(table) == 2 * 3 * len(PROMPTS)
    # alpha 0: the chat model's own answers (greedy by HF generate, sampled with the same per-prompt seeds)
    chat = random_pair.load("chat")
    ids = [f"p{i}" for i in range(len(PROMPTS))]
    responses = ts.chat_responses(chat, list(PROMPTS), ids, max_new_tokens=4, modes=("greedy", "sample"), seed=0)
    for mode in ("greedy", "sample"):
        expect = {r.prompt_id: chat.tokenizer.decode(r.response, skip_special_tokens=True)
                  for r in responses if r.mode == mode}
        got = table[(table["alpha"] == 0) & (table["mode"] == mode)].set_index("prompt_id")["text"].to_dict()
        assert got == expect, mode
    # amplification changes something at alpha 4 (the pair differs in every weight)
    a0 = table[(table["alpha"] == 0)].set_index(["mode", "prompt_id"])["text"]
    a4 = table[(table["alpha"] == 4)].set_index(["mode", "prompt_id"])["text"]
    assert (a0 != a4.loc[a0.index]).any()
    assert all(r == t.strip().startswith("the") for r, t in zip(table["refused"] == "True", table["text"]))
    summary = pd.read_csv(out / "summary.csv")
    rates = summary[(summary["part"] == "amplify") & (summary["metric"] == "refusal_rate")].set_index("group")["value"]
    g = table[(table["mode"] == "greedy") & (table["alpha"] == 1) & (table["prompt_kind"] == "harmful")]
    assert rates["greedy/harmful alpha=1"] == (g["refused"] == "True").mean()
    log = (out / "results.jsonl").read_text()
    first = (out / "amplify.csv").read_text()
    cli(*argv)  # resumed: nothing recomputed, the same table
    assert (out / "results.jsonl").read_text() == log and (out / "amplify.csv").read_text() == first
    proc = cli(*argv, "--amp-alphas", "0,2", check=False)  # the alphas are in the fingerprint
    assert proc.returncode == 2 and "amp-alphas" in proc.stderr and "--overwrite" in proc.stderr, proc.stderr
    cli(*argv, "--amp-alphas", "0", "--overwrite")
    assert {r["alpha"] for r in rows_of(out)} == {0.0}
