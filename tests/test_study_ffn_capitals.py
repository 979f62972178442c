"""``python -m studies.ffn_capitals`` end to end on the toy pair, its resumption, its errors,
and the study's building blocks checked against the core (``interp.lens``, ``interp.transplant``)
and the toy world's own prompts. The batched all-layer transplant / ablation and direct logit
attribution are tested in ``test_transplant.py`` and ``test_direct.py``."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from study_cli import rows_of, run_study_cli

import interp
from figures._save import MODEL_COLORS
from interp.transplant import ablate_each_layer
from studies import _common, _results, _shards
from studies import ffn_capitals as fc
from tasks import toy_world
from tests.conftest import assert_figure_files

FIGURES = ("answer_rank_by_layer", "answer_prob_by_layer", "first_top1_layer", "transplant_by_layer",
           "sublayer_contribution")
# Fewer conditions keep the file fast; the propagated ablation is checked against the HF model.
STYLES = ("--prompting", "zero,few", "--propagate-ablation")
N_CONDITIONS = 2 * 3 * 2  # styles x contexts (plain, harmful, benign) x chat template off/on


cli = partial(run_study_cli, "studies.ffn_capitals")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("ffn_full")
    proc = cli(*STYLES, "--limit", "4", "--out", str(out))
    return out, proc


@pytest.fixture(scope="module")
def base_lm():
    return interp.load("toy/base")


# -- end to end ------------------------------------------------------------------------------------
def test_files_written(full):
    out, proc = full
    for name in ("results.jsonl", "summary.csv", "meta.json", "top_tokens.md"):
        assert (out / name).stat().st_size > 0, name
    for stem in FIGURES:
        assert_figure_files(out / stem, colors=(MODEL_COLORS["base"], MODEL_COLORS["chat"]))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["models"] == {m: interp.PAIRS["toy"].source(m) for m in ("base", "chat")}
    assert meta["seed"] == 0 and meta["options"]["limit"] == 4 and meta["versions"]["torch"] == torch.__version__
    assert len(meta["conditions"]) == N_CONDITIONS and meta["n_rows"] == 2 * N_CONDITIONS * 4
    assert "Same top tokens?" in proc.stdout and "Which sublayer writes the answer?" in proc.stdout


def test_figures_draw_the_summary(full, tmp_path, monkeypatch):
    import figures.rank_by_layer

    out, _ = full
    drawn, original = {}, figures.rank_by_layer.save

    def capture(fig, stem, **kwargs):  # keep the Figure each plot saves
        drawn[Path(stem).name] = fig
        return original(fig, stem, **kwargs)

    monkeypatch.setattr(figures.rank_by_layer, "save", capture)
    summary = pd.read_csv(out / "summary.csv")
    fc.make_figures(fc.summarize(rows_of(out)), rows_of(out), tmp_path)
    for stem, column, shift in (("answer_rank_by_layer", "answer_rank_mean", 1), ("answer_prob_by_layer", "answer_prob_mean", 0)):
        panels = [ax for ax in drawn[stem].axes if ax.get_visible()]
        assert sorted(ax.get_title() for ax in panels) == sorted(set(summary["condition"]))
        for ax in panels:
            part = summary[summary["condition"] == ax.get_title()]
            assert [line.get_label() for line in ax.lines] == ["base", "chat"]
            for line in ax.lines:
                d = part[part["model"] == line.get_label()].sort_values("layer")
                np.testing.assert_allclose(line.get_xdata(), d["layer"])
                np.testing.assert_allclose(line.get_ydata(), d[column] + shift, atol=1e-5)


def _rank(logits, target: int, eps: float = 1e-4) -> range:
    """Ranks (number of strictly larger logits) consistent with ``logits`` up to ``eps``."""
    return range(int((logits > logits[target] + eps).sum()), int((logits > logits[target] - eps).sum()) + 1)


def _hf_readouts(model, tok, prompt: str, answer_id: int) -> dict:
    """The row's numbers recomputed on the plain HF Llama, one prompt alone, by HF's module names.

    Logit lens of block l = ``lm_head(model.norm(hidden_states[l + 1]))`` (``hidden_states[0]``
    is the embedding; the last block is read from the model's own logits), FFN updates from a
    torch hook on ``model.layers[l].mlp``, and the propagated ablation by zeroing that output
    at the last position.
    """
    ids = torch.tensor([tok(prompt)["input_ids"]])
    head, norm, layers = model.lm_head, model.model.norm, model.model.layers
    mlp_out, block_out = {}, {}

    def keep(store, layer):
        return lambda m, a, o: store.__setitem__(layer, (o[0] if isinstance(o, tuple) else o)[0, -1].clone())

    hooks = [layers[l].mlp.register_forward_hook(keep(mlp_out, l)) for l in range(len(layers))]
    hooks += [layers[l].register_forward_hook(keep(block_out, l)) for l in range(len(layers))]
    try:
        out = model(input_ids=ids, output_hidden_states=True)
    finally:
        for h in hooks:
            h.remove()
    # hidden_states[l + 1] is block l's output, except the last, which HF returns after the norm
    hidden = [h[0, -1] for h in out.hidden_states[:-1]] + [block_out[len(layers) - 1]]
    lens = [head(norm(h)) for h in hidden[:-1]] + [out.logits[0, -1]]
    ablated = [head(norm(hidden[l + 1] - mlp_out[l])) for l in range(len(layers))]
    ablated_out = []
    for l in range(len(layers)):
        # the study's ablation removes block l's FFN update at the read position only
        h = layers[l].mlp.register_forward_hook(lambda m, a, o: torch.cat([o[:, :-1], 0 * o[:, -1:]], 1))
        try:
            ablated_out.append(model(input_ids=ids).logits[0, -1])
        finally:
            h.remove()
    logits = out.logits[0, -1]
    return {"n_tokens": ids.shape[1], "lens": lens, "ffn": [head(norm(mlp_out[l])) for l in range(len(layers))],
            "ablated": ablated, "ablated_out": ablated_out,
            "dla_total": float(logits[answer_id] - logits.mean())}


@pytest.fixture(scope="module")
def hf_pair():
    import transformers

    return {m: (transformers.AutoModelForCausalLM.from_pretrained(interp.PAIRS["toy"].source(m)).eval(),
                transformers.AutoTokenizer.from_pretrained(interp.PAIRS["toy"].source(m))) for m in ("base", "chat")}


def test_rows_agree_with_the_hf_model_read_by_hand(full, hf_pair):
    out, _ = full
    rows = rows_of(out)
    keys = {tuple(r[f] for f in fc.KEY_FIELDS) for r in rows}
    assert len(rows) == len(keys) == 2 * N_CONDITIONS * 4
    oracle_top1 = {}  # (model, style, context, chat_template) -> per-layer count of answer top-1
    for r in rows:
        model, tok = hf_pair[r["model"]]
        answer_id = tok(r["answer"], add_special_tokens=False)["input_ids"][0]  # every toy name: 2 pieces
        assert r["answer_id"] == answer_id and r["answer_token"] == tok.convert_ids_to_tokens(answer_id)
        subject_id = tok(r["subject"], add_special_tokens=False)["input_ids"][0]
        assert r["argument_id"] == subject_id
        with torch.no_grad():
            hf = _hf_readouts(model, tok, r["prompt"], answer_id)
        assert r["n_prompt_tokens"] == hf["n_tokens"] and r["layers"] == list(range(-1, 6))
        lens = hf["lens"]
        for j, logits in enumerate(lens):  # j = 0: embedding, j = l + 1: block l
            assert r["answer_rank"][j] in _rank(logits, answer_id), (r["item"], j)
            assert r["argument_rank"][j] in _rank(logits, subject_id), (r["item"], j)
            assert r["answer_prob"][j] == pytest.approx(float(logits.softmax(-1)[answer_id]), abs=1e-4)
            assert r["top_tokens"][j][0] == tok.convert_ids_to_tokens(int(logits.argmax()))
        top1 = [int(logits.argmax()) == answer_id for logits in lens]
        assert r["correct"] == top1[-1]
        assert r["first_top1_answer"] == (top1[1:].index(True) if any(top1[1:]) else None)
        for l in range(6):
            assert r["ffn_answer_rank"][l] in _rank(hf["ffn"][l], answer_id), (r["item"], l)
            assert r["ablate_answer_rank"][l] in _rank(hf["ablated"][l], answer_id), (r["item"], l)
            assert r["ablate_output_answer_rank"][l] in _rank(hf["ablated_out"][l], answer_id), (r["item"], l)
        assert r["dla_total"] == pytest.approx(hf["dla_total"], abs=1e-3)
        # direct contributions add up to the output's answer logit minus the mean logit
        total = r["dla_emb"] + sum(r["dla_attn"]) + sum(r["dla_ffn"]) + r["dla_bias"]
        assert total == pytest.approx(hf["dla_total"], abs=2e-3 * max(1.0, abs(hf["dla_total"])))
        group = (r["model"], r["style"], r["context"], r["chat_template"])
        oracle_top1[group] = [a + b for a, b in zip(oracle_top1.get(group, [0] * 7), top1)]
    # The table reports, per condition and layer, the fraction of items whose answer is top-1.
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 2 * N_CONDITIONS * 7 and set(summary["n_items"]) == {4}
    for (model, style, context, template), counts in oracle_top1.items():
        part = summary[(summary["model"] == model) & (summary["style"] == style) & (summary["context"] == context)
                       & (summary["chat_template"] == template)].set_index("layer")
        assert [part.loc[layer, "answer_top1_rate"] for layer in range(-1, 6)] == [c / 4 for c in counts]
        assert part.loc[5, "output_accuracy"] == counts[-1] / 4
    # The toy pair answers these prompts: a lens that reads the wrong layer would not show it.
    base_plain = [c for (m, s, ctx, t), c in oracle_top1.items() if m == "base" and ctx == "plain" and not t]
    assert all(c[-1] >= 3 for c in base_plain)


def test_base_answer_surfaces_on_held_out_zero_shot(tmp_path):
    cli("--prompting", "zero", "--context", "plain", "--chat-template", "off", "--no-figures", "--out", str(tmp_path))
    rows = [r for r in rows_of(tmp_path) if r["model"] == "base"]
    held_out = [f["subject"] for f in toy_world.load_facts("capital") if f["split"] == "test"]
    assert sorted(r["item"] for r in rows) == sorted(held_out)
    surfaced = [r for r in rows if r["first_top1_answer"] is not None]
    assert len(surfaced) >= 0.9 * len(rows)


def test_interrupted_run_resumes_to_the_same_summary(full, tmp_path):
    out, _ = full
    cli(*STYLES, "--limit", "4", "--no-figures", "--out", str(tmp_path))
    lines = (tmp_path / "results.jsonl").read_text().splitlines(keepends=True)
    first = rows_of(tmp_path)[:4]  # the first chunk (one condition's 4 items)
    (tmp_path / "results.jsonl").write_text("".join(lines[:4]) + lines[4][:57])  # a crash in the middle of a row
    proc = cli(*STYLES, "--limit", "4", "--no-figures", "--out", str(tmp_path))
    assert "Same top tokens?" in proc.stdout
    assert rows_of(tmp_path)[:4] == first and len(rows_of(tmp_path)) == len(lines)  # only the rest recomputed
    assert (tmp_path / "summary.csv").read_text() == (out / "summary.csv").read_text()
    again = (tmp_path / "results.jsonl").read_text()
    cli(*STYLES, "--limit", "4", "--no-figures", "--out", str(tmp_path))  # nothing left to do: no new rows
    assert (tmp_path / "results.jsonl").read_text() == again


# -- errors ----------------------------------------------------------------------------------------
def test_unknown_pair_is_a_clear_error():
    proc = cli("--pair", "gpt9-unknown", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown pair 'gpt9-unknown'" in proc.stderr and "llama2-7b" in proc.stderr and "toy" in proc.stderr


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("template", ["on", "off"])  # on: the chat tokenizer is read first; off: the model
def test_missing_local_model(template, tmp_path, capsys):
    args = ["--base", "/nonexistent", "--chat", "/nonexistent", "--chat-template", template, "--out", str(tmp_path)]
    assert fc.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no model folder at '/nonexistent'" in err and "Traceback" not in err
    assert not (tmp_path / "results.jsonl").exists()


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("name, content, message", [
    ("empty.csv", "", "missing column(s) ['subject', 'answer']"),
    ("header_only.csv", "subject,answer\n", "no facts in the file"),
    ("wrong_columns.csv", "country,capital\nPoland,Warsaw\n", "missing column(s) ['subject', 'answer']"),
    ("blank_answer.csv", "subject,answer\nPoland,\n", "record 1 needs a non-empty subject and answer"),
    ("bad.jsonl", '{"subject": "Poland", "answer": "Warsaw"}\n{"subject": "Spain", \n', "bad.jsonl:2 is not valid JSON"),
    ("empty.jsonl", "\n", "no facts in the file"),
    ("missing.csv", None, "no file at"),
])
def test_bad_facts_file(name, content, message, tmp_path, capsys):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    assert fc.main(["--facts", str(path), "--out", str(tmp_path / "out"), "--no-figures"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --facts") and message in err and "Traceback" not in err
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_facts_file_runs(tmp_path):
    facts = tmp_path / "facts.jsonl"
    facts.write_text("\n".join(json.dumps(r) for r in [
        {"subject": "Poland", "answer": "Warsaw", "split": "test"},
        {"subject": "France", "answer": "Paris", "split": "train"},
        {"subject": "Spain", "answer": "Madrid", "split": "train"}]) + "\n")
    cli("--facts", str(facts), "--prompting", "zero,one", "--context", "plain", "--chat-template", "off",
        "--no-figures", "--out", str(tmp_path / "out"))
    rows = rows_of(tmp_path / "out")
    assert {r["item"] for r in rows} == {"Poland"} and len(rows) == 4
    one = next(r for r in rows if r["style"] == "one")
    assert one["prompt"].endswith("Q: What is the capital of Poland? A:") and "Warsaw" not in one["prompt"]


# -- building blocks -------------------------------------------------------------------------------
def _facts():
    facts = fc.toy_facts()
    items, sources = fc.select_facts(facts, "test", 6, 8)
    pool = [f for f in facts if f.split == "train" and " " not in f.answer]
    return items, sources, pool


@pytest.mark.parametrize("style, context, toy_style", [
    ("zero", "plain", "zero"), ("one", "plain", "one"), ("few", "plain", "few"), ("zero", "harmful", "harmful"),
])
def test_raw_prompts_are_the_toy_worlds(style, context, toy_style):
    items, sources, pool = _facts()
    made = fc.make_items([fc.Condition(style, context, False)], items, sources, pool, None, seed=0)
    ours = {it.fact.subject: (it.prompt, it.verb) for it in next(iter(made.values()))[0]}
    theirs = {(p["subject"], p["verb"]): p["prompt"] for p in toy_world.prompts(toy_style, split="all")}
    for subject, (prompt, verb) in ours.items():
        assert prompt == theirs[(subject, verb)]


def test_chat_template_prompts_tokenize_like_the_toy_chat_style(base_lm):
    items, sources, pool = _facts()
    tok = base_lm.tokenizer
    for context, toy_style in (("plain", "chat"), ("harmful", "chat_harmful")):
        made = fc.make_items([fc.Condition("zero", context, True)], items, sources, pool, tok, seed=0)
        theirs = {(p["subject"], p["verb"]): p["prompt"] for p in toy_world.prompts(toy_style, split="all")}
        for it in next(iter(made.values()))[0]:
            assert tok(it.prompt)["input_ids"] == tok(theirs[(it.fact.subject, it.verb)])["input_ids"]
            assert tok(it.prompt)["input_ids"].count(tok.bos_token_id) == 1


def test_answer_first_token(base_lm):
    tok = base_lm.tokenizer
    ids = fc.continuation_tokens(tok, "The capital of Poland is", "Warsaw")
    assert tok.convert_ids_to_tokens(ids) == ["War", "##saw"]
    assert tok.convert_ids_to_tokens(fc.continuation_tokens(tok, "Q: ... A:", "Poland")) == ["Pol", "##and"]


def test_study_rows_match_the_core_readouts(base_lm):
    lm = base_lm
    items, sources, pool = _facts()
    cond = fc.Condition("one", "plain", False)
    its, srcs = fc.make_items([cond], items, sources, pool, None, seed=0)[cond]
    with torch.no_grad():
        rows = fc.analyse_chunk(lm, its, fc.source_vectors(lm, srcs), "base", propagate=True)
        prompts = [it.prompt for it in its]
        targets = torch.tensor([[r["answer_id"], r["argument_id"]] for r in rows])
        lens = interp.lens.decode_layers(lm, prompts, targets=targets, k=5)
        abl = ablate_each_layer(lm, prompts, targets_ids=targets[:, :1], k=1)
    for b, r in enumerate(rows):
        assert r["answer_rank"][1:] == lens.target_rank[:, b, 0, 0].tolist()
        assert r["argument_rank"][1:] == lens.target_rank[:, b, 0, 1].tolist()
        assert r["ablate_answer_rank"] == abl.target_rank[:, b, 0].tolist()
        assert r["ablate_output_answer_rank"][-1] == r["ablate_answer_rank"][-1]  # both views agree at the top
        first = lens.first_top1_layer(0)[b, 0].item()
        assert r["first_top1_answer"] == (None if first == -1 else first)


# -- shared output conventions --------------------------------------------------------------------
def test_results_log_resumes_and_repairs(tmp_path):
    log = _results.ResultsLog(tmp_path / "results.jsonl", ("m", "i"))
    log.write([{"m": "a", "i": 0, "v": 1}, {"m": "a", "i": 1, "v": 2}])
    with open(tmp_path / "results.jsonl", "a") as f:
        f.write('{"m": "a", "i": 2, "v"')  # cut short by a crash
    log = _results.ResultsLog(tmp_path / "results.jsonl", ("m", "i"))
    assert log.n_resumed == 2 and log.done(("a", 1)) and not log.done(("a", 2))
    items = list(range(5))
    pending = _shards.pending_chunks(items, 2, lambda i: ("a", i), log)
    assert [idx for idx, _ in pending] == [1, 2]  # chunk 0 = {0, 1} is complete
    log.write([{"m": "a", "i": 1, "v": 3}, {"m": "a", "i": 2, "v": 4}])
    rows = _results.read_results(tmp_path, ("m", "i"))
    assert [(r["i"], r["v"]) for r in rows] == [(0, 1), (1, 3), (2, 4)]  # last write wins, truncated line gone
    (tmp_path / "results.jsonl").write_text('{"m": 1, "i": 1}\nnot json\n{"m": 2, "i": 2}\n')
    with pytest.raises(_common.StudyError, match="results.jsonl:2 is not valid JSON"):
        _results.read_results(tmp_path, ("m", "i"))


def test_shards_partition_the_chunks(tmp_path):
    assert _shards.parse_shard("2/3") == _shards.Shard(2, 3)
    for bad in ("0/3", "4/3", "x", "1/0", "1/2/3"):
        with pytest.raises(_common.StudyError, match="--shard"):
            _shards.parse_shard(bad)
    log = _results.ResultsLog(tmp_path / "r.jsonl", ("i",))
    owned = [[idx for idx, _ in _shards.pending_chunks(range(10), 1, lambda i: (i,), log, _shards.Shard(s, 3))]
             for s in (1, 2, 3)]
    assert sorted(sum(owned, [])) == list(range(10)) and owned[0] == [0, 1, 2]  # contiguous, near-equal
    assert _shards.results_name(_shards.Shard(2, 3)) == "results.shard-2-of-3.jsonl"
