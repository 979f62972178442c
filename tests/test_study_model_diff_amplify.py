"""studies.model_diff's opt-in amplify part on a tiny random pair saved to disk."""

import pandas as pd
import pytest

from interp.diff import token_shift as ts
from studies.model_diff import parse_args
from study_cli import rows_of
from tests.conftest import PROMPTS, assert_figure_files
from tests.test_study_model_diff_tokens import _paths, cli, prompt_file, random_pair  # noqa: F401 (fixtures)

AMP = ("--parts", "amplify", "--amp-alphas", "0,1,4", "--amp-modes", "greedy,sample", "--amp-prompts", "0",
       "--amp-max-new-tokens", "4", "--shift-chat-template", "off", "--adl-targets", "france", "--no-figures")


def test_amplify_is_opt_in():
    assert "amplify" not in parse_args([]).parts
    assert parse_args(["--parts", "all"]).parts[-1] == "amplify"
    assert parse_args(["--parts", "amplify"]).parts == ("amplify",)


def test_negative_alphas_and_scales_parse_without_an_equals_sign():
    args = parse_args(["--amp-alphas", "-1,0,4", "--adl-scales", "-2.5,1", "--parts", "amplify"])
    assert (args.amp_alphas, args.adl_scales, args.parts) == ("-1,0,4", "-2.5,1", ("amplify",))
    assert parse_args(["--amp-alphas=-1,4"]).amp_alphas == "-1,4"
    with pytest.raises(SystemExit):  # a real option after it is still an option: no value given
        parse_args(["--amp-alphas", "--parts", "amplify"])


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
    refused = table["refused"].astype(str) == "True"  # read back as bool or as text
    assert all(r == t.strip().startswith("france") for r, t in zip(refused, table["text"])) and 0 < refused.sum()
    summary = pd.read_csv(out / "summary.csv")
    rates = summary[(summary["part"] == "amplify") & (summary["metric"] == "refusal_rate")].set_index("group")["value"]
    g = table[(table["mode"] == "greedy") & (table["alpha"] == 1) & (table["prompt_kind"] == "plain")]
    assert rates["greedy/plain alpha=1"] == (g["refused"].astype(str) == "True").mean()
    log = (out / "results.jsonl").read_text()
    first = (out / "amplify.csv").read_text()
    cli(*argv)  # resumed: nothing recomputed, the same table
    assert (out / "results.jsonl").read_text() == log and (out / "amplify.csv").read_text() == first
    proc = cli(*argv, "--amp-alphas", "0,2", check=False)  # the alphas are in the fingerprint
    assert proc.returncode == 2 and "amp-alphas" in proc.stderr and "--overwrite" in proc.stderr, proc.stderr
    cli(*argv, "--amp-alphas", "0", "--overwrite")
    assert {r["alpha"] for r in rows_of(out)} == {0.0}


def test_amplify_figure_plots_the_summary_rates(random_pair, prompt_file, tmp_path, monkeypatch):  # noqa: F811
    import figures.by_layer
    from studies.model_diff import run_study

    plotted = []
    real = figures.by_layer.plot_by_layer
    monkeypatch.setattr(figures.by_layer, "plot_by_layer", lambda df, *a, **k: plotted.append(df) or real(df, *a, **k))
    out = tmp_path / "run"
    argv = [*_paths(random_pair), *(a for a in AMP if a != "--no-figures"), "--amp-modes", "greedy",
            "--shift-prompts", str(prompt_file), "--out", str(out)]
    run_study(parse_args(argv))
    assert_figure_files(out / "amplify_refusal_rate")
    (data,) = plotted
    got = {(m, k, a): v for m, k, a, v in zip(data["mode"], data["prompt_kind"], data["alpha"], data["refusal_rate"])}
    # every point is a summary row, and the summary row is the fraction refused in amplify.csv
    summary = pd.read_csv(out / "summary.csv")
    rates = summary[(summary["part"] == "amplify") & (summary["metric"] == "refusal_rate")].set_index("group")["value"]
    assert {f"{m}/{k} alpha={a:g}": v for (m, k, a), v in got.items()} == rates.to_dict()
    table = pd.read_csv(out / "amplify.csv", keep_default_na=False)
    hand = {(m, k, float(a)): float((g["refused"].astype(str) == "True").mean())
            for (m, k, a), g in table.groupby(["mode", "prompt_kind", "alpha"])}
    assert got == hand and len(got) == 3 * 2  # alphas x kinds
    assert 0 < sum(got.values()) < len(got)  # some but not all greedy answers start with "france"
