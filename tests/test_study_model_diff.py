"""``python -m studies.model_diff`` end to end on the toy pair (weights and activations parts),
its tables against independent computations (the safetensors tensors, HF's own forward),
resumption, parts run separately into one folder, and bad input."""

from __future__ import annotations

import json
from functools import partial

import pandas as pd
import pytest
import torch
import transformers
from safetensors import safe_open
from study_cli import run_study_cli

import interp
from studies.model_diff import activations as acts_part
from tests.conftest import assert_figure_files, random_model

# the token-level parts have their own tests (test_study_model_diff_tokens.py), on smaller pairs
SMALL = ("--parts", "weights,activations", "--n-neutral", "4", "--prompt-limit", "3", "--max-tokens", "400")
cli = partial(run_study_cli, "studies.model_diff")


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("model_diff")
    proc = cli(*SMALL, "--out", str(out))
    return out, proc


def test_files_written(full):
    out, proc = full
    for name in ("results.jsonl", "weights.csv", "activations.csv", "summary.csv", "meta.json"):
        assert (out / name).stat().st_size > 0, name
    for stem in ("weight_change_heatmap", "activation_divergence_by_layer"):
        assert_figure_files(out / stem)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["rows_by_part"]["weights"] == 56 and meta["options"]["parts"] == ["weights", "activations"]
    assert "parameters changed" in proc.stdout and "activations harmful" in proc.stdout


def test_weights_csv_equals_the_stored_tensors(full):
    out, _ = full
    table = pd.read_csv(out / "weights.csv")
    assert {"module", "layer", "rel_change", "frac_changed", "sv_1", "effective_rank", "stable_rank"} <= set(table.columns)
    row = table[table["name"] == "model.layers.3.mlp.up_proj.weight"].iloc[0]
    assert (row["module"], row["layer"]) == ("mlp.up_proj", 3)
    with safe_open(f"{interp.PAIRS['toy'].source('base')}/model.safetensors", "pt") as fb, \
            safe_open(f"{interp.PAIRS['toy'].source('chat')}/model.safetensors", "pt") as fc:
        wb, wc = fb.get_tensor(row["name"]).double(), fc.get_tensor(row["name"]).double()
    assert row["rel_change"] == pytest.approx(float((wc - wb).norm() / wb.norm()), rel=1e-5)
    assert row["n_changed"] == int((wc != wb).sum())
    assert row["sv_1"] == pytest.approx(float(torch.linalg.svdvals(wc - wb)[0]), rel=1e-5)
    summary = pd.read_csv(out / "summary.csv")
    total = summary[(summary["part"] == "weights") & (summary["group"] == "all") & (summary["metric"] == "n_params")]
    assert int(total["value"].iloc[0]) == int(table["n_params"].sum())


def test_activations_last_block_kl_equals_the_models_own_outputs(full):
    out, _ = full
    table = pd.read_csv(out / "activations.csv")
    args = type("A", (), {"n_neutral": 4, "prompt_limit": 3, "max_tokens": 400, "batch_size": 16, "texts": None,
                          "seed": 0})()
    texts = acts_part.corpora(args)["harmful"]
    models = {m: transformers.AutoModelForCausalLM.from_pretrained(interp.PAIRS["toy"].source(m)).eval()
              for m in ("base", "chat")}
    tok = transformers.AutoTokenizer.from_pretrained(interp.PAIRS["toy"].source("base"))
    kls, rels = [], []
    for text in texts:  # one at a time: no padding anywhere
        ids = torch.tensor([tok(text)["input_ids"]])
        with torch.no_grad():
            o = {m: model(ids, output_hidden_states=True) for m, model in models.items()}
        lb, lc = (o[m].logits[0].double().log_softmax(-1) for m in ("base", "chat"))
        kls.append((lb.exp() * (lb - lc)).sum(-1))
        hb, hc = o["base"].hidden_states[3][0].double(), o["chat"].hidden_states[3][0].double()  # block 2's output
        rels.append((hc - hb).norm(dim=-1) / hb.norm(dim=-1))
    harmful = table[(table["corpus"] == "harmful") & (table["positions"] == "all")].set_index("layer")
    assert harmful.loc[5, "kl_base_chat"] == pytest.approx(float(torch.cat(kls).mean()), rel=1e-4)
    assert harmful.loc[2, "rel_diff"] == pytest.approx(float(torch.cat(rels).mean()), rel=1e-4)
    assert harmful.loc[2, "n_tokens"] == sum(len(tok(t)["input_ids"]) for t in texts)
    assert set(table["corpus"]) == {"neutral", "plain", "benign", "harmful"}


def test_interrupted_run_resumes_identically(full, tmp_path):
    out, _ = full
    cli(*SMALL, "--no-figures", "--out", str(tmp_path))
    lines = (tmp_path / "results.jsonl").read_text().splitlines(keepends=True)
    cut = 57  # the weights part (56 rows) and the first corpus done, the second cut short
    (tmp_path / "results.jsonl").write_text("".join(lines[:cut]) + lines[cut][:40])
    cli(*SMALL, "--no-figures", "--out", str(tmp_path))
    resumed = (tmp_path / "results.jsonl").read_text().splitlines(keepends=True)
    assert resumed[:cut] == lines[:cut] and len(resumed) == len(lines)  # only the cut corpus and the rest recomputed
    for name in ("weights.csv", "activations.csv", "summary.csv"):
        assert (tmp_path / name).read_text() == (out / name).read_text(), name
    again = (tmp_path / "results.jsonl").read_text()
    cli(*SMALL, "--no-figures", "--out", str(tmp_path))
    assert (tmp_path / "results.jsonl").read_text() == again


def test_parts_run_separately_into_one_folder(full, tmp_path):
    out, _ = full
    proc = cli(*SMALL, "--parts", "weights", "--no-figures", "--out", str(tmp_path))
    assert not (tmp_path / "activations.csv").exists() and "activations" not in proc.stdout
    cli(*SMALL, "--parts", "activations", "--no-figures", "--out", str(tmp_path))
    for name in ("weights.csv", "activations.csv", "summary.csv"):
        assert (tmp_path / name).read_text() == (out / name).read_text(), name


def test_other_options_into_the_same_folder_are_refused(full):
    out, _ = full
    proc = cli("--parts", "weights,activations", "--n-neutral", "5", "--prompt-limit", "3", "--max-tokens", "400",
               "--out", str(out), check=False)
    assert proc.returncode == 2 and "n-neutral 4 -> 5" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_input_errors(tmp_path):
    proc = cli("--parts", "weights,colours", check=False)
    assert proc.returncode == 2 and "invalid part 'colours'" in proc.stderr and "weights, activations" in proc.stderr
    proc = cli("--shard", "1/2", "--out", str(tmp_path / "s"), check=False)
    assert proc.returncode == 2 and "only token_shift shards" in proc.stderr and "Traceback" not in proc.stderr
    model = random_model("llama")  # another architecture's shapes than the toy base
    model.save_pretrained(tmp_path / "other")
    transformers.AutoTokenizer.from_pretrained(interp.PAIRS["toy"].source("base")).save_pretrained(tmp_path / "other")
    proc = cli("--base", interp.PAIRS["toy"].source("base"), "--chat", str(tmp_path / "other"), "--parts", "weights",
               "--out", str(tmp_path / "o"), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "store different tensors" in proc.stderr
    proc = cli("--base", interp.PAIRS["toy"].source("base"), "--chat", str(tmp_path / "none"), check=False)
    assert proc.returncode == 2 and "no model folder" in proc.stderr
    proc = cli(*SMALL, "--texts", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "t"), check=False)
    assert proc.returncode == 2 and "--texts" in proc.stderr and "no such file" in proc.stderr


def test_summary_only_and_overwrite(full, tmp_path):
    out, _ = full
    cli(*SMALL, "--no-figures", "--out", str(tmp_path))
    (tmp_path / "summary.csv").unlink()
    cli(*SMALL, "--no-figures", "--summary-only", "--out", str(tmp_path))
    assert (tmp_path / "summary.csv").read_text() == (out / "summary.csv").read_text()
    proc = cli("--parts", "weights,activations", "--n-neutral", "2", "--prompt-limit", "3", "--max-tokens", "400",
               "--no-figures", "--overwrite",
               "--out", str(tmp_path))
    assert "activations neutral" in proc.stdout
    table = pd.read_csv(tmp_path / "activations.csv")
    assert set(table[table["corpus"] == "neutral"]["n_texts"]) == {2}
