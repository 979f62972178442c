"""The one forward path (``interp.forward``): a run continued from its key/value cache equals the
whole run, at every hook and in the logits, padding on either side included; and probes use
only the public API of ``interp``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import interp
from interp.errors import PromptError

# (prefix, continuation) token ids per prompt: prefixes and continuations of different
# lengths, so the prefix batch is left-padded and the continuation batch right-padded.
SPLITS = [
    ([5, 9, 13, 7], [21, 8, 30]),
    ([6, 11], [17]),
    ([12, 4, 19, 25, 10], [14, 9]),
]


def _continuation(lm, names):
    """The prefixes run with ``use_cache``, then every continuation on that cache (right-padded)."""
    prefix = lm.run([p for p, _ in SPLITS], capture=names, use_cache=True)
    longest = max(len(c) for _, c in SPLITS)
    ids = torch.full((len(SPLITS), longest), lm.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, (_, c) in enumerate(SPLITS):
        ids[i, :len(c)], mask[i, :len(c)] = torch.tensor(c), 1
    return prefix, lm.run_continuation(prefix.past, prefix.attention_mask, ids, mask, capture=names)


def test_prefix_then_continuation_on_its_cache_equals_the_whole_run(lm):
    names = lm.hook_names()
    whole = lm.run([p + c for p, c in SPLITS], capture=names)  # left-padded
    prefix, cont = _continuation(lm, names)
    seq, pseq = whole.tokens.shape[1], prefix.tokens.shape[1]
    for i, (p, c) in enumerate(SPLITS):
        n = len(p) + len(c)
        at_prefix = slice(seq - n, seq - len(c))  # prompt i's prefix columns in the whole batch
        at_cont = slice(seq - len(c), seq)
        torch.testing.assert_close(prefix.logits[i, pseq - len(p):], whole.logits[i, at_prefix], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(cont.logits[i, :len(c)], whole.logits[i, at_cont], atol=1e-5, rtol=1e-4)
        for name in names:
            if name.endswith("hook_pattern"):  # [batch, head, query, key]: the real keys of each query
                prefix_keys = slice(pseq - len(p), pseq)
                torch.testing.assert_close(prefix.cache[name][i][:, prefix_keys, prefix_keys],
                                           whole.cache[name][i][:, at_prefix, at_prefix], atol=1e-5, rtol=1e-4)
                cont_pattern = cont.cache[name][i][:, :len(c)]  # keys: the cache's columns, then the new ones
                torch.testing.assert_close(cont_pattern[:, :, prefix_keys], whole.cache[name][i][:, at_cont, at_prefix],
                                           atol=1e-5, rtol=1e-4, msg=lambda m: f"{name} (continuation, past keys): {m}")
                torch.testing.assert_close(cont_pattern[:, :, pseq:pseq + len(c)], whole.cache[name][i][:, at_cont, at_cont],
                                           atol=1e-5, rtol=1e-4, msg=lambda m: f"{name} (continuation, new keys): {m}")
                continue
            torch.testing.assert_close(prefix.cache[name][i, pseq - len(p):], whole.cache[name][i, at_prefix],
                                       atol=1e-5, rtol=1e-4, msg=lambda m: f"{name} (prefix): {m}")
            torch.testing.assert_close(cont.cache[name][i, :len(c)], whole.cache[name][i, at_cont],
                                       atol=1e-5, rtol=1e-4, msg=lambda m: f"{name} (continuation): {m}")
    assert torch.equal(cont.lengths, torch.tensor([len(p) + len(c) for p, c in SPLITS]))


def test_run_equals_the_hf_model_run_by_hand(lm):
    """``LM.run`` through the one path gives the HF model's own numbers for a padded batch."""
    prompts = [p + c for p, c in SPLITS]
    run = lm.run(prompts, capture="resid_post")
    ids, mask = run.tokens, run.attention_mask
    with torch.no_grad():
        out = lm.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                       output_hidden_states=True, use_cache=False)
    real = mask.bool()
    assert torch.equal(run.logits[real], out.logits[real])
    for layer in range(lm.n_layers - 1):  # HF's last hidden state is after the final norm
        assert torch.equal(run.cache[f"blocks.{layer}.hook_resid_post"][real], out.hidden_states[layer + 1][real])


def test_continuation_checks_its_inputs(lm_of):
    lm = lm_of("gpt2")
    prefix = lm.run([[5, 9, 13]], use_cache=True)
    with pytest.raises(PromptError, match=r"past_mask must be \[batch=1, past=3\]"):
        lm.run_continuation(prefix.past, torch.ones(1, 2, dtype=torch.long), torch.tensor([[7]]))
    with pytest.raises(PromptError, match="ids and mask must be integer tensors"):
        lm.run_continuation(prefix.past, prefix.attention_mask, torch.tensor([[7.0]]))
    assert lm.run([[5]]).past is None  # no cache unless asked


PROBES = Path(__file__).resolve().parents[1] / "probes"


def private_uses(source: str) -> list[str]:
    """What a module takes from ``interp`` that is not public: an import of ``interp.hooks`` or
    ``interp.forward``, an imported name starting with ``_``, or an attribute starting with
    ``_`` (not a dunder) read from anything but ``self``/``cls``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("interp"):
            if node.module in ("interp.hooks", "interp.forward"):
                found.append(f"line {node.lineno}: from {node.module} import ...")
            found += [f"line {node.lineno}: imports {a.name}" for a in node.names
                      if a.name.startswith("_") or (node.module == "interp" and a.name in ("hooks", "forward"))]
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name in ("interp.hooks", "interp.forward")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"line {node.lineno}: .{node.attr}")
    return found


def test_probes_use_only_the_public_interp_api():
    files = sorted(PROBES.glob("*.py"))
    assert len(files) > 5
    bad = {f.name: private_uses(f.read_text()) for f in files}
    assert not {k: v for k, v in bad.items() if v}


def test_the_private_use_check_sees_each_kind():
    assert private_uses("from interp.hooks import HookSession") and private_uses("import interp.hooks")
    assert private_uses("from interp.model import _INT_DTYPES") and private_uses("x = lm._pad_id()")
    assert not private_uses("from interp.lens import logit_lens\nx = self._row(1)\ny = lm.pad_id")


def test_public_names_stay_where_the_readme_imports_them():
    from interp.patching import baseline_metric, logit, logit_diff, patch_heads, patch_layers, patch_sweep  # noqa: F401
    from interp.transplant import ablate, ablate_each_layer, transplant, transplant_each_layer, updates  # noqa: F401

    assert interp.transplant.ablate is interp.ablation.ablate
