"""``python -m studies.dictionaries`` end to end on the toy pair (fast settings): its files, the
latents table against the saved crosscoder, resumption, and bad input."""

from __future__ import annotations

import json
from functools import partial

import pandas as pd
import pytest
import torch
from study_cli import run_study_cli

from interp.dictionaries.crosscoder import CHAT_ONLY, Crosscoder, norm_classes, relative_norm_difference
from tests.conftest import assert_figure_files

FAST = ("--n-docs", "60", "--prompt-limit", "6", "--xc-steps", "60", "--xc-dict-size", "64", "--xc-k", "4",
        "--xc-batch-size", "128", "--causal-limit", "3", "--contexts", "2", "--batch-size", "4",
        "--mlsae-latents", "64", "--mlsae-steps", "30", "--mlsae-batch-size", "64", "--splice-windows", "1")
cli = partial(run_study_cli, "studies.dictionaries")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dictionaries")
    return out, cli(*FAST, "--out", str(out))


def test_files_and_latents_table(run):
    out, proc = run
    for name in ("results.jsonl", "latents.csv", "summary.csv", "crosscoder_dashboard.md", "crosscoder_dashboard.html",
                 "meta.json", "crosscoder/config.json", "crosscoder/crosscoder.safetensors"):
        assert (out / name).stat().st_size > 0, name
    assert_figure_files(out / "crosscoder_norm_ratio")
    assert_figure_files(out / "crosscoder_causal_kl")
    assert_figure_files(out / "mlsae_latent_layers")
    both = pd.read_csv(out / "latents.csv")
    assert set(both["dictionary"]) == {"crosscoder", "mlsae"}
    mlsae = both[both["dictionary"] == "mlsae"]
    assert len(mlsae) == 64 and {"mean_layer_base", "mean_layer_chat", "var_within_base", "moved"} <= set(mlsae)
    live = mlsae.dropna(subset=["mean_layer_base"])
    assert ((live["mean_layer_base"] >= 0) & (live["mean_layer_base"] <= 5)).all()
    table = both[both["dictionary"] == "crosscoder"].reset_index(drop=True)
    assert len(table) == 64 and list(table["latent"]) == list(range(64))
    assert set(table["class"]) <= {"shared", "base_only", "chat_only", "other"}
    for column in ("norm_base", "norm_chat", "beta_error_base", "beta_error_chat", "beta_recon_base", "beta_recon_chat",
                   "nu_epsilon", "nu_r", "fires_harmful_last", "fires_refusal"):
        assert column in table, column
    # the table's norms are the saved crosscoder's, and its classes follow from them
    model = Crosscoder.load(out / "crosscoder")
    norms = model.decoder_norms()
    assert table["norm_base"].tolist() == pytest.approx(norms[:, 0].tolist(), rel=1e-5)
    assert table["norm_chat"].tolist() == pytest.approx(norms[:, 1].tolist(), rel=1e-5)
    delta = relative_norm_difference(torch.tensor(table[["norm_base", "norm_chat"]].to_numpy()))
    assert list(table["class"]) == norm_classes(delta)
    assert (table.loc[table["class"] == "chat_only", "norm_ratio"] >= CHAT_ONLY).all()
    assert table["robust"].isna().equals(table["class"] != "chat_only")   # robust is only said of chat-only latents
    meta = json.loads((out / "meta.json").read_text())
    assert meta["study"] == "dictionaries" and "latents.csv" in meta["outputs"]
    assert "crosscoder (blocks [4]" in proc.stdout and "causal check on harmful prompts" in proc.stdout


def test_causal_rows(run):
    out, _ = run
    summary = pd.read_csv(out / "summary.csv")
    causal = summary[summary["part"] == "causal"]
    kl = causal[causal["metric"] == "kl_last_mean"]
    assert {g.split(":")[0] for g in kl["group"]} == {"plain", "benign", "harmful"}
    assert {g.split(":")[1] for g in kl["group"]} == {"base", "chat_only", "robust_chat_only", "chat_leaning", "random", "all"}
    assert (kl["value"] >= -1e-9).all()
    base = kl[kl["group"] == "harmful:base"]["value"].iloc[0]
    assert base > 0  # base's activation alone changes chat's next-token distribution


def test_resume_writes_nothing_new(run):
    out, _ = run
    before = {n: (out / n).read_bytes() for n in ("results.jsonl", "latents.csv", "crosscoder_dashboard.md")}
    cli(*FAST, "--out", str(out))
    for name, data in before.items():
        assert (out / name).read_bytes() == data, name


def test_other_settings_refused(run):
    out, _ = run
    proc = cli(*FAST, "--xc-k", "8", "--out", str(out), check=False)
    assert proc.returncode == 2 and "different settings" in proc.stderr and "xc-k" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (("--xc-layers", "9"), "valid: 0..5"),
    (("--xc-layers", "two"), "comma-separated block numbers"),
    (("--pair", "nope"), "nope"),
])
def test_bad_input(tmp_path, args, message):
    proc = cli(*FAST, *args, "--out", str(tmp_path), check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and message in proc.stderr
    assert "Traceback" not in proc.stderr
