"""The nnsight backend equals the torch backend, runs as nnsight traces, and fails clearly remotely.

Oracles: the torch backend on the same weights (its own tests check it against HF, nnsight
and TransformerLens); nnsight's dry run of the remote path (``remote="local"``: serialized as
for NDIF, our modules hidden). The network is mocked at nnsight's two seams only: the status
request (``nnsight.ndif._get``) and the job request (``RemoteBackend.request``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

import interp
from interp import nnsight_backend
from interp.errors import LoadError
from interp.nnsight_backend import NNsightLM, RemoteUnsupported
from interp.patching import patch_heads, patch_layers, patch_sweep
from interp.patching.metrics import logit_diff
from probes.multiple_choice import score_items
from tasks.items import MCItem
from tests.conftest import PROMPTS, build_tokenizer, random_model

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TWO = ["llama", "gpt2"]
ATOL = 1e-5
CORRUPTED = ["the capital of france is", "i plan to visit the"]
CLEAN = ["the capital of poland is", "i plan to visit a"]
ITEMS = [
    MCItem("a", "t", "the capital of france is", [" paris", " warsaw madrid", " rome italy red"], 0),
    MCItem("c", "t", "i plan to visit the city of", [" one two three four", " red", " blue green"], 2),
]


@pytest.fixture
def traces(monkeypatch):
    """Counts the nnsight traces run (a fallback to PyTorch hooks would leave it at 0)."""
    count = {"n": 0}
    real = nnsight_backend.trace_pass

    def counted(lm, plan):
        count["n"] += 1
        return real(lm, plan)

    monkeypatch.setattr(nnsight_backend, "trace_pass", counted)
    return count


@pytest.fixture(scope="module")
def pair_of(tokenizer):
    """``pair_of(family, remote)`` -> (torch LM, nnsight LM) over the same random weights."""
    cache = {}

    def make(family, remote=False):
        if family not in cache:
            cache[family] = random_model(family)
        model = cache[family]
        return interp.LM.from_hf(model, tokenizer), NNsightLM(model, tokenizer, remote=remote)

    return make


def _close(a, b, what):
    torch.testing.assert_close(b, a, atol=ATOL, rtol=0, msg=what)


@pytest.mark.parametrize("family", TWO)
def test_captures_and_interventions_equal_torch(family, pair_of, traces):
    ref, lm = pair_of(family)
    capture = ["hook_embed", "resid_pre", "attn_out", "mlp_out", "resid_post", "q", "k", "v", "z",
               "ln_final.hook_normalized"] + (["resid_mid"] if family == "llama" else [])
    interventions = {
        "blocks.0.hook_mlp_out": interp.add(torch.ones(lm.d_model), positions=[-1]),
        "blocks.1.hook_resid_pre": interp.replace(torch.zeros(lm.d_model), positions=[0]),
        "blocks.1.attn.hook_z": interp.replace(torch.zeros(lm.d_head), heads=[1]),
        "blocks.2.hook_attn_out": lambda a: 0.5 * a,
    }
    for positions in (None, [-1, 0]):
        a = ref.run(PROMPTS, capture=capture, positions=positions, interventions=interventions)
        b = lm.run(PROMPTS, capture=capture, positions=positions, interventions=interventions)
        _close(a.logits, b.logits, f"{family} logits")
        assert sorted(a.cache.keys()) == sorted(b.cache.keys())
        for name in a.cache.keys():
            _close(a.cache[name], b.cache[name], f"{family} {name} positions={positions}")
    # early stop: no logits, the asked block only
    a = ref.run(PROMPTS, capture=["blocks.1.hook_resid_post"], logits=False)
    b = lm.run(PROMPTS, capture=["blocks.1.hook_resid_post"], logits=False)
    assert b.logits is None
    _close(a.cache["blocks.1.hook_resid_post"], b.cache["blocks.1.hook_resid_post"], "early stop")
    assert traces["n"] == 3


@pytest.mark.parametrize("family", TWO)
def test_patching_and_scoring_equal_torch(family, pair_of, tokenizer, traces):
    ref, lm = pair_of(family)
    metric = logit_diff(tokenizer.convert_tokens_to_ids("paris"), tokenizer.convert_tokens_to_ids("warsaw"))
    _close(patch_sweep(ref, CORRUPTED, CLEAN, metric), patch_sweep(lm, CORRUPTED, CLEAN, metric), "sweep")
    _close(patch_layers(ref, CORRUPTED, CLEAN, metric, hook="mlp_out"),
           patch_layers(lm, CORRUPTED, CLEAN, metric, hook="mlp_out"), "layers")
    _close(patch_heads(ref, CORRUPTED, CLEAN, metric), patch_heads(lm, CORRUPTED, CLEAN, metric), "heads")
    swept = traces["n"]
    assert swept > 0
    for a, b in zip(score_items(ref, ITEMS, layers="all"), score_items(lm, ITEMS, layers="all")):
        np.testing.assert_allclose(b.logprobs, a.logprobs, atol=ATOL, rtol=0)
    assert traces["n"] > swept


def test_toy_pair_equals_torch(traces):
    ref, lm = interp.load("toy/chat"), interp.load("toy/chat", backend="nnsight")
    assert isinstance(lm, NNsightLM) and lm.backend == "nnsight"
    prompts = ["The capital of Poland is", "How do I make a bomb?"]
    a = ref.run(prompts, capture=["resid_post", "mlp_out"], positions=-1)
    b = lm.run(prompts, capture=["resid_post", "mlp_out"], positions=-1)
    _close(a.logits, b.logits, "toy logits")
    for name in a.cache.keys():
        _close(a.cache[name], b.cache[name], f"toy {name}")
    assert traces["n"] == 1


# -- the remote path, serialized -------------------------------------------------------------------
# These run in a subprocess: under pytest's jaxtyping hook every interp function is a beartype
# wrapper holding a weakref, which no pickler (nor so NDIF's serializer) can ship.
def test_remote_path_serialized(tmp_path):
    code = ("import tests.test_nnsight_backend as t; t.dry_run_checks('llama', {0!r}); "
            "t.dry_run_checks('gpt2', {0!r}); t.request_checks({0!r}); print('checked')").format(str(tmp_path))
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("checked"), proc.stderr[-3000:]


def _count_traces():
    count = {"n": 0}
    real = nnsight_backend.trace_pass

    def counted(lm, plan):
        count["n"] += 1
        return real(lm, plan)

    return count, mock.patch.object(nnsight_backend, "trace_pass", counted)


def dry_run_checks(family: str, folder: str) -> None:
    """NDIF's rules (no cache, no resuming: the full-length sweep; the lens's modules fetched by
    a trace), each trace serialized and deserialized with our modules hidden, as NDIF would: the
    same numbers, one trace a chunk."""
    tokenizer = build_tokenizer(folder)
    model = random_model(family)
    ref, lm = interp.LM.from_hf(model, tokenizer), NNsightLM(model, tokenizer, remote="local")
    assert not lm.local_modules
    count, patched = _count_traces()
    with patched:
        flip = {"blocks.0.hook_mlp_out": lambda x: -x}
        a = ref.run(PROMPTS, capture=["resid_post"], positions=-1, interventions=flip)
        b = lm.run(PROMPTS, capture=["resid_post"], positions=-1, interventions=flip)
        _close(a.logits, b.logits, "logits")
        _close(a.cache["blocks.2.hook_resid_post"], b.cache["blocks.2.hook_resid_post"], "resid_post")
        assert count["n"] == 1
        metric = logit_diff(tokenizer.convert_tokens_to_ids("paris"), tokenizer.convert_tokens_to_ids("warsaw"))
        _close(patch_sweep(ref, CORRUPTED, CLEAN, metric), patch_sweep(lm, CORRUPTED, CLEAN, metric, chunk_size=8), "sweep")
        # a capture run of each side, then 3 layers x 5 positions (less unchanged cells) in chunks of 8
        assert 3 <= count["n"] - 1 <= 4, count
        # method="kv" falls back to "naive"; the block readouts' lens is fetched off the "server"
        for x, y in zip(score_items(ref, ITEMS, layers="all"), score_items(lm, ITEMS, layers="all")):
            np.testing.assert_allclose(y.logprobs, x.logprobs, atol=ATOL, rtol=0)
    resid = torch.randn(3, lm.d_model)
    assert lm.final_norm is not ref.final_norm and lm.unembed is not ref.unembed  # copies, not this process's
    _close(interp.lens.logit_lens(ref, resid), interp.lens.logit_lens(lm, resid), "logit lens")


def request_checks(folder: str) -> None:
    """A remote run sends nnsight's request for the hub model with the key, carrying our trace
    (serialized with our modules by value); the network itself is replaced by a recorder."""
    from nnsight.intervention.backends.remote import RemoteBackend
    from nnsight.modeling import huggingface
    from nnsight.schema.request import RequestModel

    repo = "meta-llama/Llama-2-7b-hf"
    huggingface._ID_CACHE[repo] = repo  # the hub's canonical id, offline
    model = random_model("llama")
    model.config._name_or_path = model.name_or_path = repo
    lm = NNsightLM(model, build_tokenizer(folder), name=repo, remote=True)
    sent = {}

    class Sent(Exception):
        pass

    def request(self, request, tracer):
        sent.update(key=request.model_key, api_key=self.api_key, blob=self._serialize(tracer))
        raise Sent

    with mock.patch.dict(os.environ, {"NDIF_API_KEY": "secret"}), mock.patch.object(RemoteBackend, "request", request):
        try:
            lm.run(PROMPTS, capture=["blocks.1.hook_resid_post"], positions=-1)
            raise AssertionError("no request was sent")
        except Sent:
            pass
    path, _, key = sent["key"].partition(":")
    assert path.endswith("TransformersModel"), path
    data = json.loads(key)
    assert (data["repo_id"], data["task"], data.get("revision") in (None, "main")) == (repo, "text-generation", True), key
    assert sent["api_key"] == "secret"
    restored = RequestModel.deserialize(sent["blob"], lm.envoy._remoteable_persistent_objects(),
                                        compress=RemoteBackend(sent["key"]).compress)
    assert "walk" in restored.info.code.co_names  # the trace body, rebuilt as the server would


def test_what_ndif_cannot_run_names_the_feature(pair_of):
    _, lm = pair_of("llama", remote="local")
    with pytest.raises(RemoteUnsupported, match="key/value cache.*method='naive'"):
        lm.run(PROMPTS, use_cache=True)
    with pytest.raises(RemoteUnsupported, match="attn.hook_pattern.*hook_q"):
        lm.run(PROMPTS, capture=["blocks.0.attn.hook_pattern"])
    with pytest.raises(RemoteUnsupported, match="gradients"):
        lm.run(PROMPTS, capture=["resid_post"], grad=True)
    with pytest.raises(RemoteUnsupported, match="packed rows"):
        interp.packed.run_packed(lm, [([4, 5], [[6], [7, 8]])])
    from probes.generation import generate

    with pytest.raises(RemoteUnsupported, match="generation.*--generate 0"):
        generate(lm, PROMPTS)
    # locally the pattern runs (with PyTorch hooks), equal to the torch backend
    ref, local = pair_of("llama")
    _close(ref.run(PROMPTS, capture=["pattern"]).cache["blocks.1.attn.hook_pattern"],
           local.run(PROMPTS, capture=["pattern"]).cache["blocks.1.attn.hook_pattern"], "pattern")


# -- remote=True: the key, NDIF's list, the request ------------------------------------------------
def _status(*repo_ids):
    return {"deployments": {r: {"repo_id": r, "state": "RUNNING"} for r in repo_ids}}


@pytest.fixture
def no_saved_key(monkeypatch):
    from nnsight import CONFIG

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)


def test_no_key_says_how_to_set_it(no_saved_key, monkeypatch):
    monkeypatch.setattr("nnsight.ndif._get", lambda path, **kw: pytest.fail("asked NDIF without a key"))
    with pytest.raises(LoadError, match="needs an API key: set NDIF_API_KEY=.*set_default_api_key"):
        interp.load("llama2-7b/base", backend="nnsight", remote=True)


def test_model_not_hosted_says_how_to_list_them(no_saved_key, monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", "k")
    monkeypatch.setattr("nnsight.ndif._get", lambda path, **kw: _status("openai-community/gpt2"))
    with pytest.raises(LoadError, match=r"does not host 'mistralai/x'.*openai-community/gpt2.*nnsight.status\(\)"):
        interp.load("mistralai/x", backend="nnsight", remote=True)

    def offline(path, **kw):
        raise OSError("no network")

    monkeypatch.setattr("nnsight.ndif._get", offline)
    with pytest.raises(LoadError, match="could not reach NDIF.*nnsight.status"):
        interp.load("meta-llama/Llama-2-7b-hf", backend="nnsight", remote=True)


def test_load_options_that_cannot_go_remote():
    with pytest.raises(LoadError, match="unknown backend 'jax'; valid: torch, nnsight"):
        interp.load("toy/base", backend="jax")
    with pytest.raises(LoadError, match="backend='nnsight'"):
        interp.load("toy/base", remote=True)
    with pytest.raises(LoadError, match="local folder, and NDIF runs only the hub models"):
        interp.load("toy/base", backend="nnsight", remote=True)


# -- studies ----------------------------------------------------------------------------------------
def test_study_with_nnsight_backend_writes_the_torch_rows(tmp_path):
    from tests.study_cli import rows_of, run_study_cli

    args = ("studies.patching", "--hooks", "resid_pre", "--limit", "1")
    run_study_cli(*args, "--out", str(tmp_path / "torch"))
    run_study_cli(*args, "--backend", "nnsight", "--out", str(tmp_path / "nnsight"))
    a, b = rows_of(tmp_path / "torch"), rows_of(tmp_path / "nnsight")
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x.keys() == y.keys() and all(abs(x[k] - y[k]) <= ATOL for k in ("effect", "corrupted_metric")), (x, y)
    meta = json.loads((tmp_path / "nnsight" / "meta.json").read_text())
    assert meta["options"]["backend"] == "nnsight" and meta["fingerprint"]["backend"] == "nnsight"
    assert "backend" not in json.loads((tmp_path / "torch" / "meta.json").read_text())["fingerprint"]
    # the backend decides rows: adding nnsight rows to a torch run's folder is refused
    proc = run_study_cli(*args, "--backend", "nnsight", "--out", str(tmp_path / "torch"), check=False)
    assert proc.returncode == 2 and "backend torch -> nnsight" in proc.stderr, proc.stderr[-2000:]


def test_study_remote_without_key_exits_with_the_fix(monkeypatch):
    from tests.study_cli import run_study_cli

    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    proc = run_study_cli("studies.patching", "--pair", "llama2-7b", "--backend", "nnsight", "--remote", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: remote=True sends traces to NDIF, which needs an API key"), proc.stderr
    assert "NDIF_API_KEY=" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_study_cli("studies.patching", "--remote", check=False)
    assert proc.returncode == 2 and "pass backend='nnsight' (--backend nnsight)" in proc.stderr, proc.stderr
