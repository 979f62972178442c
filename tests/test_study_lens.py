"""``--lens logit|tuned|PATH`` in the studies that early-decode layers: the tuned lens really
decodes the blocks (the final readout and the last block stay the model's), rows, summary,
fingerprint and figures name it, a resumed run with another lens is refused, and a bad
``--lens`` is one line naming the valid choices."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import interp
from interp.lens.tuned import lens_sha256
from studies import _lens, benchmarks, calibration
from studies import ffn_capitals as fc
from toy_pair import tuned_lens as shipped

BENCH = ["--tasks", "toy_capitals", "--limit", "3", "--generate", "0", "--no-figures"]
FFN = ["--limit", "2", "--prompting", "zero", "--context", "plain", "--chat-template", "off", "--no-figures"]
SHIPPED = {m: shipped.OUT / m for m in shipped.MEMBERS}


def run(capsys, module, *args) -> tuple[int, str]:
    status = module.main([str(a) for a in args])
    return status, capsys.readouterr().err


def rows_of(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def bench_runs(tmp_path_factory):
    """The same benchmarks run under the logit and the shipped tuned lens."""
    root = tmp_path_factory.mktemp("lens")
    for lens in ("logit", "tuned"):
        assert benchmarks.main([*BENCH, "--lens", lens, "--out", str(root / lens)]) == 0
    return root


def test_tuned_rows_record_the_lens_and_decode_blocks_through_it(bench_runs):
    logit, tuned = rows_of(bench_runs / "logit"), rows_of(bench_runs / "tuned")
    assert len(logit) == len(tuned) == 2 * 3
    assert {r["lens"] for r in logit} == {"logit"} and not any("lens_sha256" in r for r in logit)
    for a, b in zip(logit, tuned):
        assert (a["model"], a["item"]) == (b["model"], b["item"])
        assert b["lens"] == "tuned" and b["lens_sha256"] == lens_sha256(SHIPPED[b["model"]])
        la, lb = np.array(a["logprobs"]), np.array(b["logprobs"])  # [readout, option]: final, blocks 0..5
        np.testing.assert_array_equal(la[0], lb[0])  # the final readout is the model's under any lens
        np.testing.assert_allclose(la[-1], lb[-1], atol=1e-5)  # the last block's translator is the identity
        assert not np.allclose(la[1:-1], lb[1:-1], atol=1e-3)  # the other blocks go through the lens


def test_tuned_rows_equal_score_items_with_the_shipped_lens(bench_runs):
    """Independent of the study's plumbing: the probe itself, given each member's shipped lens."""
    from probes.multiple_choice import score_items
    from tasks.benchmarks import toy_capitals

    items = {it.id: it for it in toy_capitals.load(data="fixture", limit=3)}
    rows = rows_of(bench_runs / "tuned")
    for member in shipped.MEMBERS:
        lm = interp.load(f"toy/{member}")
        mine = [r for r in rows if r["model"] == member]
        scores = score_items(lm, [items[r["item"]] for r in mine], layers="all", lens=shipped.load(lm, member))
        for r, s in zip(mine, scores):
            np.testing.assert_allclose(r["logprobs"], s.logprobs, atol=2e-6)


def test_fingerprint_summary_and_meta_name_the_lens(bench_runs):
    fp = json.loads((bench_runs / "tuned" / "fingerprint.json").read_text())["fingerprint"]
    sha = {m: lens_sha256(f) for m, f in SHIPPED.items()}
    assert fp["options"]["lens"] == f"tuned (base #{sha['base'][:12]}, chat #{sha['chat'][:12]})"
    logit_fp = json.loads((bench_runs / "logit" / "fingerprint.json").read_text())["fingerprint"]
    assert logit_fp["options"]["lens"] == "logit"
    meta = json.loads((bench_runs / "tuned" / "meta.json").read_text())
    assert meta["lens_folders"] == {m: str(f) for m, f in SHIPPED.items()}
    summary = pd.read_csv(bench_runs / "tuned" / "summary.csv")
    assert list(summary.columns[summary.columns.get_loc("layer") + 1:][:2]) == ["lens", "lens_sha256"]
    assert set(summary["lens"]) == {"tuned"}
    assert all(summary["lens_sha256"] == summary["model"].map(sha))
    assert set(pd.read_csv(bench_runs / "logit" / "summary.csv")["lens"]) == {"logit"}


def test_resume_with_another_lens_is_refused(bench_runs, tmp_path, capsys):
    folder = Path(shutil.copytree(bench_runs / "logit", tmp_path / "run"))
    before = (folder / "results.jsonl").read_bytes()
    status, err = run(capsys, benchmarks, *BENCH, "--lens", "tuned", "--out", folder)
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: ")
    assert "was made with different settings: lens logit -> tuned (base #" in err, err
    assert "use a new --out folder or --overwrite" in err
    assert (folder / "results.jsonl").read_bytes() == before
    status, err = run(capsys, benchmarks, *BENCH, "--lens", "tuned", "--out", folder, "--summary-only")
    assert status == 2 and "lens logit -> tuned" in err


def test_the_same_lens_files_elsewhere_resume_and_a_retrained_lens_is_refused(bench_runs, tmp_path, capsys):
    folder = Path(shutil.copytree(bench_runs / "tuned", tmp_path / "run"))
    before = (folder / "results.jsonl").read_bytes()
    copy = Path(shutil.copytree(shipped.OUT, tmp_path / "lenses"))
    status, err = run(capsys, benchmarks, *BENCH, "--lens", copy, "--out", folder)
    assert status == 0, err
    assert (folder / "results.jsonl").read_bytes() == before  # same files, same rows: nothing recomputed
    lm = interp.load("toy/chat")
    retrained = interp.lens.TunedLens.load(copy / "chat", lm)
    with torch.no_grad():
        retrained.bias[0] += 0.1
    retrained.save(copy / "chat")
    status, err = run(capsys, benchmarks, *BENCH, "--lens", copy, "--out", folder)
    assert status == 2 and "lens tuned (base #" in err and "different settings" in err, err
    assert (folder / "results.jsonl").read_bytes() == before


def test_bad_lens_values_name_the_valid_choices(tmp_path, capsys):
    status, err = run(capsys, benchmarks, *BENCH, "--lens", "tunde", "--out", tmp_path / "a")
    assert status == 2 and err.count("\n") == 1
    assert "unknown --lens 'tunde': choose from logit, tuned, or a folder" in err, err
    (tmp_path / "half" / "base").mkdir(parents=True)
    shutil.copytree(SHIPPED["base"], tmp_path / "half" / "base", dirs_exist_ok=True)
    status, err = run(capsys, fc, *FFN, "--lens", tmp_path / "half", "--out", tmp_path / "b")
    assert status == 2 and "no tuned lens for chat in" in err and "python -m toy_pair.tuned_lens" in err, err
    assert not (tmp_path / "b" / "results.jsonl").exists()


def test_a_pair_without_a_shipped_lens_says_how_to_train_one():
    with pytest.raises(_lens.StudyError, match="pair 'llama2-7b' has no shipped tuned lens .*"
                                               r"interp\.lens\.train_tuned_lens.*python -m toy_pair\.tuned_lens"):
        _lens.resolve_lens_option("tuned", interp.PAIRS["llama2-7b"])


def test_each_members_lens_must_be_that_members(tmp_path, capsys):
    swapped = tmp_path / "swapped"
    shutil.copytree(SHIPPED["chat"], swapped / "base")
    shutil.copytree(SHIPPED["base"], swapped / "chat")
    status, err = run(capsys, benchmarks, *BENCH, "--lens", swapped, "--out", tmp_path / "run")
    assert status == 2 and err.count("\n") == 1 and "final norm and unembedding differ" in err, err


def test_lens_needs_block_readouts(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        benchmarks.parse_args([*BENCH, "--layers", "none", "--lens", "tuned"])
    assert exit_.value.code == 2 and "--layers none has none" in capsys.readouterr().err


def test_ffn_capitals_reads_the_residual_stream_through_the_lens(tmp_path):
    from interp.ablation import ablate_each_layer
    from studies.ffn_capitals.items import Condition, make_items, select_facts, toy_facts

    runs = {}
    for lens in ("logit", "tuned"):
        assert fc.main([*FFN, "--lens", lens, "--out", str(tmp_path / lens)]) == 0
        runs[lens] = rows_of(tmp_path / lens)
    assert {r["lens"] for r in runs["tuned"]} == {"tuned"}
    assert {r["lens_sha256"] for r in runs["tuned"] if r["model"] == "base"} == {lens_sha256(SHIPPED["base"])}
    facts = toy_facts()
    items, sources = select_facts(facts, "test", 2, 8)
    pool = [f for f in facts if f.split == "train" and " " not in f.answer] or facts
    (prompts, _), = make_items([Condition("zero", "plain", False)], items, sources, pool, None, 0).values()
    lm = interp.load("toy/base")
    tuned = shipped.load(lm, "base")
    post = lm.run([p.prompt for p in prompts], capture="resid_post", positions=-1).cache.stack("resid_post")
    answers = torch.tensor([[r["answer_id"]] for r in runs["tuned"] if r["model"] == "base"])
    ablated = ablate_each_layer(lm, [p.prompt for p in prompts], targets_ids=answers, k=1, lens=tuned)
    for b, (a, t) in enumerate(zip([r for r in runs["logit"] if r["model"] == "base"],
                                   [r for r in runs["tuned"] if r["model"] == "base"])):
        # oracle: the tuned lens's own decode of each block's resid_post at the last position
        logits = torch.stack([tuned.decode(post[layer, b, -1], layer) for layer in range(lm.n_layers)]).float()
        expected = (logits > logits[:, [t["answer_id"]]]).sum(-1)
        assert t["answer_rank"][1:] == expected.tolist()
        assert t["ablate_answer_rank"] == ablated.target_rank[:, b, 0].tolist()  # w/o the FFN update, through the lens
        assert t["ablate_answer_rank"] != a["ablate_answer_rank"]
        assert t["answer_rank"][0] == a["answer_rank"][0]  # the embedding: logit lens in both
        assert t["answer_rank"] != a["answer_rank"]
        assert (t["correct"], t["output_top_token"]) == (a["correct"], a["output_top_token"])
        assert t["ffn_answer_rank"] == a["ffn_answer_rank"]  # a lone FFN update: logit lens in both
    summary = fc.summarize(runs["tuned"])
    assert set(summary["lens"]) == {"tuned"} and set(fc.summarize(runs["logit"])["lens"]) == {"logit"}
    fc.make_figures(summary, runs["tuned"], tmp_path / "figures")
    assert (tmp_path / "figures" / "top_tokens.md").read_text().startswith("# Top tokens by layer (tuned lens")


def test_calibration_records_the_lens(tmp_path):
    out = tmp_path / "cal"
    assert calibration.main(["--tasks", "toy_capitals", "--limit", "4", "--lens", "tuned", "--no-figures",
                             "--n-boot", "10", "--out", str(out)]) == 0
    assert {r["lens"] for r in rows_of(out)} == {"tuned"}
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["lens"]) == {"tuned"} and set(summary["layer"]) == {"final", *map(str, range(6))}
    assert json.loads((out / "fingerprint.json").read_text())["fingerprint"]["options"]["lens"].startswith("tuned (")


def test_figures_name_the_lens(bench_runs, tmp_path, monkeypatch):
    import figures.by_layer

    labels = []
    original = figures.by_layer.plot_by_layer

    def capture(df, stem, **kwargs):
        labels.append((kwargs.get("ylabel"), kwargs.get("title")))
        return original(df, stem, **kwargs)

    monkeypatch.setattr(figures.by_layer, "plot_by_layer", capture)
    for lens in ("logit", "tuned"):
        summary = pd.read_csv(bench_runs / lens / "summary.csv", dtype={"layer": str})
        benchmarks.make_figures(summary, tmp_path / lens)
    (ylabel_logit, title_logit), (ylabel_tuned, title_tuned) = labels
    assert "logit lens" in ylabel_logit and "logit lens" in title_logit
    assert "tuned lens" in ylabel_tuned and "tuned lens" in title_tuned


def test_mixed_lens_rows_are_refused():
    rows = [{"model": "base", "layers": ["final", 0], "lens": "logit"},
            {"model": "base", "layers": ["final", 0], "lens": "tuned", "lens_sha256": "ab" * 32},
            {"model": "chat", "skipped": "too long"}]
    with pytest.raises(_lens.StudyError, match=r"the base rows mix lenses \(logit, tuned #abab"):
        _lens.lens_by_model(rows)
    assert _lens.lens_by_model(rows[1:]) == {"base": {"lens": "tuned", "lens_sha256": "ab" * 32}}
