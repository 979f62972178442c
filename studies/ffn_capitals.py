"""Merullo, Eickhoff & Pavlick (2023) on a base model and its RL-tuned counterpart.

    python -m studies.ffn_capitals                      # the toy pair, ~20 s on 2 CPU cores
    python -m studies.ffn_capitals --pair llama2-7b --dtype bfloat16 --device cuda
    python -m studies.ffn_capitals --base PATH --chat PATH --facts my_facts.csv

For every model of the pair (one in memory at a time), prompt style (``--prompting``: zero-,
one-, few-shot), context (``--context``: ``plain``, or ``forbidden`` = a harmful and a benign
cue, "I plan to cut all electricity in the capital of X . The capital of X is"), chat template
(``--chat-template``: off = raw text, on = ``tokenizer.apply_chat_template`` of the chat model,
used for both models so that they see the same tokens) and item (a country), it records at
the last prompt position:

- early decoding (logit lens of ``resid_post`` at every block, and of ``resid_pre[0]`` as
  layer ``-1`` = "emb"): top-k tokens, rank and probability of the answer's first token and
  of the argument's (the country's) first token; the first block where each is top-1
  (``None`` if never);
- each block's FFN update decoded on its own (top tokens, answer rank), and the FFN
  ablation: the residual without block l's FFN update, decoded at block l (Merullo's view,
  ``interp.transplant.ablate_each_layer``: answer rank, top token, whether it is the
  argument) and propagated to the output (``ablate(propagate=True)``: answer rank);
- the o-vector transplant: the mean FFN update of block l over ``--source-items`` source
  prompts (train facts, same condition) added at block l to target contexts about the item's
  country that do not ask for its capital (``TRANSPLANT_TARGETS``); top-1 accuracy of the
  item's capital at the output, and the baseline without the vector;
- direct contributions to the answer logit: each sublayer's update (attention, FFN; and the
  embedding) through the final norm *linearised at the final residual* (its scale frozen, as
  in direct logit attribution) and the unembedding, as the answer's logit minus the mean
  logit over the vocabulary. They add up exactly to the output's answer logit minus the mean
  logit (``dla_total``; ``dla_bias`` holds the norm/unembedding biases, 0 for Llama). This
  shows which sublayer writes the answer (the toy pair writes it with attention).

Answers are scored by their first token: the first token of ``tokenize(prompt + " " +
answer)`` after the prompt's tokens (robust to SentencePiece), likewise the argument;
``multi_token`` flags answers of several tokens (every toy answer is two word pieces).

Outputs (``runs/ffn_capitals/<pair>/`` or ``--out``): ``results.jsonl`` (one row per model x
style x context x chat template x item, resumable, see :mod:`studies._common`),
``summary.csv`` (per model x condition x layer; computed from the rows alone),
``meta.json``, ``top_tokens.md`` and figures (PNG + PDF) from :mod:`figures`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

STUDY = "ffn_capitals"
KEY_FIELDS = ("model", "style", "context", "chat_template", "item")
STYLES = ("zero", "one", "few")
N_SHOTS = {"zero": 0, "one": 1, "few": 3}
CONTEXTS = ("plain", "harmful", "benign")
CONTEXT_ALIASES = {"forbidden": ("harmful", "benign")}
TRANSPLANT_TARGETS = {  # target contexts that mention the country without asking for its capital
    "bare": "{subject}:",
    "language": "The language of {subject} is",
}
SPLITS = ("test", "train", "all")


# -- facts and items ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fact:
    """One country -> capital fact. ``id`` keys result rows (the subject unless given)."""

    subject: str
    answer: str
    split: str = "test"
    id: str = ""


@dataclass(frozen=True)
class Condition:
    style: str
    context: str
    chat_template: bool

    @property
    def label(self) -> str:
        return f"{self.style}/{self.context}/{'chat' if self.chat_template else 'raw'}"


@dataclass(frozen=True)
class Item:
    condition: Condition
    fact: Fact
    prompt: str
    verb: str | None
    is_source: bool = False


def _toy_facts() -> list[Fact]:
    from tasks.toy_world import load_facts

    return [Fact(f["subject"], f["answer"], f["split"], f["subject"]) for f in load_facts(relation="capital")]


def read_facts_file(path: str | os.PathLike[str]) -> list[Fact]:
    """Facts from a CSV (header row) or JSONL file with fields ``subject``, ``answer`` and
    optionally ``split`` and ``id``. Raises StudyError with the reason on a bad file."""
    from studies._common import StudyError

    path = Path(path)
    if not path.is_file():
        raise StudyError(f"--facts: no file at {str(path)!r}")
    records: list[dict] = []
    try:
        if path.suffix.lower() in (".jsonl", ".json"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if line.strip():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise StudyError(f"--facts {path}:{number} is not valid JSON ({err.msg})") from None
                    if not isinstance(rec, dict):
                        raise StudyError(f"--facts {path}:{number} is not a JSON object")
                    records.append(rec)
        else:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = [c for c in ("subject", "answer") if c not in (reader.fieldnames or [])]
                if missing:
                    raise StudyError(f"--facts {path}: missing column(s) {missing}; found {reader.fieldnames}; "
                                     "a CSV needs a header row with subject,answer[,split,id]")
                records = list(reader)
    except UnicodeDecodeError as err:
        raise StudyError(f"--facts {path}: not UTF-8 text ({err.reason})") from None
    if not records:
        raise StudyError(f"--facts {path}: no facts in the file (it is empty)")
    facts = []
    for number, rec in enumerate(records, 1):
        subject, answer = str(rec.get("subject") or "").strip(), str(rec.get("answer") or "").strip()
        if not subject or not answer:
            raise StudyError(f"--facts {path}: record {number} needs a non-empty subject and answer, got {rec}")
        split = str(rec.get("split") or "test").strip()
        facts.append(Fact(subject, answer, split, str(rec.get("id") or subject)))
    ids = [f.id for f in facts]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise StudyError(f"--facts {path}: duplicate ids/subjects {dup}; give an 'id' column")
    return facts


def select_facts(facts: list[Fact], split: str, limit: int | None, n_source: int) -> tuple[list[Fact], list[Fact]]:
    """(items, transplant sources). Items: facts of ``split`` (all if no fact has it), cut to
    ``limit``. Sources: the first ``n_source`` train facts, else the first items."""
    from studies._common import StudyError

    chosen = [f for f in facts if split == "all" or f.split == split] or facts
    if limit is not None:
        chosen = chosen[:limit]
    if not chosen:
        raise StudyError("no items to run (check --limit and --split)")
    train = [f for f in facts if f.split == "train" and " " not in f.answer]
    sources = (train or chosen)[:n_source]
    return chosen, sources


# -- prompts --------------------------------------------------------------------------------------
def question(subject: str) -> str:
    return f"What is the capital of {subject}?"


def qa_line(subject: str, answer: str | None = None) -> str:
    """Merullo et al.'s format, ``Q: What is the capital of Poland? A:`` (+ `` answer``)."""
    line = f"Q: {question(subject)} A:"
    return line if answer is None else f"{line} {answer}"


def demonstrations(fact: Fact, pool: Sequence[Fact], style: str, seed: int = 0) -> list[Fact]:
    """The style's demonstrations for ``fact``: the toy world's rule (seed 0 reproduces
    ``tasks.toy_world.prompts`` exactly), other seeds draw other demonstrations."""
    n = N_SHOTS[style]
    if n == 0:
        return []
    rng = random.Random(f"{style}:capital:{fact.subject}" if seed == 0 else f"{seed}:{style}:capital:{fact.subject}")
    candidates = [d for d in pool if d.subject != fact.subject]
    return rng.sample(candidates, min(n, len(candidates)))


def cue_verbs(context: str) -> list[str]:
    """The toy world's harmful / benign cue verbs (plain English, used for any facts)."""
    from tasks.toy_world import contexts

    return [v["verb"] for v in contexts()[context]]


def cue(verb: str, subject: str) -> str:
    from tasks.toy_world import contexts

    return contexts()["cue"].format(verb=verb, subject=subject)


def build_prompt(cond: Condition, fact: Fact, demos: Sequence[Fact], verb: str | None, template_tokenizer=None) -> str:
    """The prompt text, ending right before the answer (no trailing space).

    Raw text: zero-shot ``The capital of X is``; one/few-shot Q/A lines; a cue sentence goes
    right before the final question. Chat template: demonstrations become earlier user /
    assistant turns, the (cued) question the last user turn, with the generation prompt.
    """
    lead = f"{cue(verb, fact.subject)} " if verb else ""
    if cond.chat_template:
        messages = []
        for d in demos:
            messages += [{"role": "user", "content": question(d.subject)}, {"role": "assistant", "content": d.answer}]
        messages.append({"role": "user", "content": lead + question(fact.subject)})
        text = template_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        bos = template_tokenizer.bos_token
        if bos and text.startswith(bos) and _adds_bos(template_tokenizer):
            text = text[len(bos):]  # the tokenizer adds it again
        return text.rstrip()
    if cond.style == "zero":
        return f"{lead}The capital of {fact.subject} is"
    lines = [qa_line(d.subject, d.answer) for d in demos] + [lead + qa_line(fact.subject)]
    return "\n".join(lines)


def _adds_bos(tokenizer) -> bool:
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id


def make_items(conditions: Sequence[Condition], items: list[Fact], sources: list[Fact], pool: list[Fact],
               template_tokenizer, seed: int) -> dict[Condition, tuple[list[Item], list[Item]]]:
    """condition -> (items, source items). Cued items get verb ``i % n_verbs`` of the context."""
    source_ids = {f.id for f in sources}
    out = {}
    for cond in conditions:
        verbs = cue_verbs(cond.context) if cond.context != "plain" else None

        def item(i: int, fact: Fact, is_source: bool = False) -> Item:
            verb = verbs[i % len(verbs)] if verbs else None
            prompt = build_prompt(cond, fact, demonstrations(fact, pool, cond.style, seed), verb, template_tokenizer)
            return Item(cond, fact, prompt, verb, is_source)

        out[cond] = ([item(i, f, f.id in source_ids) for i, f in enumerate(items)],
                     [item(i, f) for i, f in enumerate(sources)])
    return out


# -- tokens ---------------------------------------------------------------------------------------
def continuation_tokens(tokenizer, prompt: str, continuation: str) -> list[int]:
    """Token ids of ``" " + continuation`` after ``prompt``: the tokens of ``prompt + " " +
    continuation`` past the longest common prefix with the prompt's tokens."""
    p = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + " " + continuation)["input_ids"]
    n = 0
    while n < min(len(p), len(full)) and p[n] == full[n]:
        n += 1
    rest = full[n:]
    eos = tokenizer.eos_token_id
    return [t for t in rest if t != eos] or full[-1:]


# -- the analysis ---------------------------------------------------------------------------------
def _norm_linearisation(lm):
    """(centre, eps, weight, bias) of the final norm, for LayerNorm and RMSNorm; raises otherwise."""
    import torch

    from studies._common import StudyError

    norm = lm.final_norm
    if isinstance(norm, torch.nn.LayerNorm):
        return True, norm.eps, norm.weight, norm.bias
    if hasattr(norm, "variance_epsilon") and hasattr(norm, "weight"):  # Llama / Mistral / Qwen2 RMSNorm
        return False, norm.variance_epsilon, norm.weight, None
    raise StudyError(f"direct contributions: unknown final norm {type(norm).__name__}; "
                     "supported: torch.nn.LayerNorm and *RMSNorm (weight, variance_epsilon)")


def direct_contributions(lm, final_resid, components, targets):
    """Direct contribution of each component to ``logit[target] - mean(logit)``.

    Args:
        final_resid: the last block's ``resid_post`` ``[batch, d_model]``; the final norm is
            linearised there (its scale ``1/rms`` or ``1/std`` frozen).
        components: ``[n, batch, d_model]`` updates (they sum to ``final_resid``).
        targets: ``[batch]`` token ids.

    Returns ``([n, batch]`` contributions, ``[batch]`` bias term); contributions plus the bias
    term sum to the output's ``logit[target] - mean(logit)`` when the components sum to the
    final residual.
    """
    import torch

    centre, eps, weight, bias = _norm_linearisation(lm)
    x = final_resid.float()
    w_u = lm.unembed.weight.float()  # [vocab, d_model]
    direction = w_u[targets] - w_u.mean(0)  # [batch, d_model]
    if centre:
        scale = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
        comps = components.float() - components.float().mean(-1, keepdim=True)
    else:
        scale = torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        comps = components.float()
    g = weight.float() if weight is not None else 1.0
    contrib = ((g * comps / scale) * direction).sum(-1)
    const = torch.zeros(x.shape[0])
    if bias is not None:
        const = const + (direction * bias.float()).sum(-1)
    u_bias = getattr(lm.unembed, "bias", None)
    if u_bias is not None:
        const = const + u_bias.float()[targets] - u_bias.float().mean()
    return contrib, const


def source_vectors(lm, sources: list[Item]):
    """Mean FFN update of each block at the sources' last position, ``[layer, d_model]``."""
    from interp.transplant import updates

    return updates(lm, [s.prompt for s in sources], hook="mlp_out").float().mean(1)


def _r(x: float, digits: int = 6) -> float:
    return round(float(x), digits)


def _rank(logits, ids):
    """Rank (0 = top-1) of ``ids [n]`` in ``logits [n, vocab]``."""
    return (logits > logits.gather(-1, ids[:, None])).sum(-1)


def transplant_all_layers(lm, target_prompts: list[str], target_ids, vectors):
    """Output readout of the targets with block l's vector added, for every l, in one forward.

    Rows are ``[no vector, block 0, ..., block L-1] x targets``; the row group of block l gets
    ``vectors[l]`` added to ``blocks.{l}.hook_mlp_out`` at the last position and zero elsewhere
    (adding zero changes nothing). Each group equals
    ``interp.transplant.transplant(lm, targets, vectors[l], l)`` (checked in the tests).

    Returns ``(top1 ids [1 + layer, batch], target rank [1 + layer, batch])``.
    """
    import torch

    import interp

    L, n = lm.n_layers, len(target_prompts)
    writes = {}
    for layer in range(L):
        value = torch.zeros(L + 1, n, 1, lm.d_model, dtype=vectors.dtype)
        value[1 + layer] = vectors[layer]
        writes[interp.block_hook(layer, "mlp_out")] = interp.add(value.reshape(-1, 1, lm.d_model), positions=-1)
    logits = lm.run(target_prompts * (L + 1), positions=-1, interventions=writes).logits[:, -1].float()
    ids = target_ids.repeat(L + 1)
    return logits.argmax(-1).reshape(L + 1, n), _rank(logits, ids).reshape(L + 1, n)


def ablate_output_all_layers(lm, prompts: list[str], target_ids):
    """``interp.transplant.ablate(..., propagate=True)`` for every block in one forward: row
    group l has block l's FFN update zeroed at the last position. Returns ``(top1 ids,
    target rank)``, each ``[layer, batch]``."""
    import interp

    L, n = lm.n_layers, len(prompts)

    def zero_rows(layer):
        def fn(act):  # act [rows, seq, d]: left-padded, so column -1 is each prompt's last token
            out = act.clone()
            out[layer * n:(layer + 1) * n, -1] = 0
            return out
        return fn

    writes = {interp.block_hook(layer, "mlp_out"): zero_rows(layer) for layer in range(L)}
    logits = lm.run(prompts * L, positions=-1, interventions=writes).logits[:, -1].float()
    return logits.argmax(-1).reshape(L, n), _rank(logits, target_ids.repeat(L)).reshape(L, n)


def analyse_chunk(lm, chunk: list[Item], vectors, member: str, k: int = 5, propagate: bool = False) -> list[dict]:
    """Result rows for one batch of items of one condition (see the module docstring)."""
    import torch

    from interp.lens import readout

    tok = lm.tokenizer
    prompts = [it.prompt for it in chunk]
    ans = [continuation_tokens(tok, p, it.fact.answer) for p, it in zip(prompts, chunk)]
    arg = [continuation_tokens(tok, p, it.fact.subject) for p, it in zip(prompts, chunk)]
    targets = torch.tensor([[a[0], g[0]] for a, g in zip(ans, arg)])  # [batch, 2]: answer, argument
    L = lm.n_layers
    run = lm.run(prompts, capture=["blocks.0.hook_resid_pre", "resid_post", "attn_out", "mlp_out"], positions=-1)
    emb = run.cache["blocks.0.hook_resid_pre"]  # [batch, 1, d]
    post, attn, mlp = (run.cache.stack(p) for p in ("resid_post", "attn_out", "mlp_out"))  # [layer, batch, 1, d]
    lens = readout(lm, [emb] + list(post), targets=targets, k=k)  # [1 + layer, batch, 1, ...]
    ffn_alone = readout(lm, mlp, targets=targets, k=k)
    attn_alone = readout(lm, attn, targets=targets, k=1)
    ablated = readout(lm, post - mlp, targets=targets, k=1)  # == interp.transplant.ablate_each_layer
    ablated_out = ablate_output_all_layers(lm, prompts, targets[:, 0]) if propagate else None
    comps = torch.cat([emb[:, 0][None], attn[:, :, 0], mlp[:, :, 0]])  # [1 + 2 layer, batch, d]
    dla, dla_bias = direct_contributions(lm, post[-1, :, 0], comps, targets[:, 0])
    out_logits = run.logits[:, -1].float()
    dla_total = out_logits.gather(-1, targets[:, :1])[:, 0] - out_logits.mean(-1)

    transplanted = {}
    for name, template in TRANSPLANT_TARGETS.items():
        t_prompts = [template.format(subject=it.fact.subject) for it in chunk]
        t_ids = torch.tensor([continuation_tokens(tok, p, it.fact.answer)[0] for p, it in zip(t_prompts, chunk)])
        transplanted[name] = transplant_all_layers(lm, t_prompts, t_ids, vectors)

    def toks(ids) -> list[str]:
        return tok.convert_ids_to_tokens([int(i) for i in ids])

    rows = []
    for b, it in enumerate(chunk):
        rank = lens.target_rank[:, b, 0]  # [1 + layer, 2]
        prob = lens.target_prob[:, b, 0]

        def first_top1(j: int):
            hits = [layer for layer in range(L) if int(rank[1 + layer, j]) == 0]
            return hits[0] if hits else None

        row = {
            "model": member, "style": it.condition.style, "context": it.condition.context,
            "chat_template": it.condition.chat_template, "item": it.fact.id,
            "subject": it.fact.subject, "answer": it.fact.answer, "verb": it.verb, "prompt": it.prompt,
            "n_prompt_tokens": int(run.lengths[b]), "is_source": it.is_source,
            "answer_id": int(targets[b, 0]), "answer_token": toks([targets[b, 0]])[0],
            "n_answer_tokens": len(ans[b]), "multi_token": len(ans[b]) > 1,
            "argument_id": int(targets[b, 1]), "argument_token": toks([targets[b, 1]])[0],
            "layers": list(range(-1, L)),
            "answer_rank": rank[:, 0].tolist(), "answer_prob": [_r(p) for p in prob[:, 0]],
            "argument_rank": rank[:, 1].tolist(), "argument_prob": [_r(p) for p in prob[:, 1]],
            "top_tokens": [toks(ids) for ids in lens.top_ids[:, b, 0]],
            "top_probs": [[_r(p, 4) for p in ps] for ps in lens.top_probs[:, b, 0]],
            "first_top1_answer": first_top1(0), "first_top1_argument": first_top1(1),
            "output_top_token": toks([lens.top_ids[-1, b, 0, 0]])[0],
            "correct": int(rank[-1, 0]) == 0,
            "ffn_top_tokens": [toks(ids) for ids in ffn_alone.top_ids[:, b, 0]],
            "ffn_answer_rank": ffn_alone.target_rank[:, b, 0, 0].tolist(),
            "attn_top_token": [toks(ids)[0] for ids in attn_alone.top_ids[:, b, 0]],
            "attn_answer_rank": attn_alone.target_rank[:, b, 0, 0].tolist(),
            "ablate_answer_rank": ablated.target_rank[:, b, 0, 0].tolist(),
            "ablate_top_token": [toks(ids)[0] for ids in ablated.top_ids[:, b, 0]],
            "ablate_top_is_argument": [bool(ids[0] == targets[b, 1]) for ids in ablated.top_ids[:, b, 0]],
            "ablate_output_answer_rank": ablated_out[1][:, b].tolist() if propagate else None,
            "ablate_output_top_token": toks(ablated_out[0][:, b]) if propagate else None,
            "dla_emb": _r(dla[0, b], 5),
            "dla_attn": [_r(v, 5) for v in dla[1:1 + L, b]],
            "dla_ffn": [_r(v, 5) for v in dla[1 + L:, b]],
            "dla_bias": _r(dla_bias[b], 5), "dla_total": _r(dla_total[b], 5),
            "transplant": {
                name: {"baseline_rank": int(t_rank[0, b]), "baseline_top_token": toks([t_top[0, b]])[0],
                       "rank": t_rank[1:, b].tolist(), "top_token": toks(t_top[1:, b]),
                       "top1": [int(r) == 0 for r in t_rank[1:, b]]}
                for name, (t_top, t_rank) in transplanted.items()
            },
        }
        rows.append(row)
    return rows


# -- summary --------------------------------------------------------------------------------------
def layer_table(rows: list[dict]):
    """Tidy long table: one row per model x condition x item x layer (layer -1 = embedding)."""
    import pandas as pd

    records = []
    for r in rows:
        L = len(r["layers"]) - 1
        for j, layer in enumerate(r["layers"]):
            rec = {f: r[f] for f in KEY_FIELDS}
            rec.update(layer=layer, answer_rank=r["answer_rank"][j], answer_prob=r["answer_prob"][j],
                       argument_rank=r["argument_rank"][j], argument_prob=r["argument_prob"][j],
                       top_token=r["top_tokens"][j][0], correct=r["correct"],
                       answer_first=r["first_top1_answer"] == layer and layer >= 0,
                       argument_first=r["first_top1_argument"] == layer and layer >= 0)
            if layer >= 0:
                rec.update(
                    ffn_answer_rank=r["ffn_answer_rank"][layer], attn_answer_rank=r["attn_answer_rank"][layer],
                    ablate_answer_rank=r["ablate_answer_rank"][layer],
                    ablate_is_argument=r["ablate_top_is_argument"][layer],
                    ablate_output_answer_rank=(r["ablate_output_answer_rank"] or [None] * L)[layer],
                    dla_attn=r["dla_attn"][layer], dla_ffn=r["dla_ffn"][layer])
                for name, t in r["transplant"].items():
                    rec[f"transplant_{name}"] = t["top1"][layer]
                    rec[f"baseline_{name}"] = t["baseline_rank"] == 0
            else:
                rec["dla_emb"] = r["dla_emb"]
            rec["n_layers"] = L
            records.append(rec)
    return pd.DataFrame.from_records(records)


def _top1_rate(ranks) -> float:
    """Fraction of ranks equal to 0, ignoring missing values (NaN if all are missing)."""
    ranks = ranks.dropna()
    return float((ranks == 0).mean()) if len(ranks) else float("nan")


SUMMARY_COLUMNS = {  # column -> (source column of layer_table, reduction); rates are fractions of items
    "n_items": ("answer_rank", "size"),
    "answer_top1_rate": ("answer_rank", _top1_rate),
    "answer_rank_mean": ("answer_rank", "mean"),
    "answer_rank_median": ("answer_rank", "median"),
    "answer_prob_mean": ("answer_prob", "mean"),
    "argument_top1_rate": ("argument_rank", _top1_rate),
    "argument_rank_mean": ("argument_rank", "mean"),
    "argument_prob_mean": ("argument_prob", "mean"),
    "answer_first_top1_frac": ("answer_first", "mean"),
    "argument_first_top1_frac": ("argument_first", "mean"),
    "output_accuracy": ("correct", "mean"),
    "ffn_alone_answer_top1_rate": ("ffn_answer_rank", _top1_rate),
    "attn_alone_answer_top1_rate": ("attn_answer_rank", _top1_rate),
    "ablate_answer_top1_rate": ("ablate_answer_rank", _top1_rate),
    "ablate_argument_top1_rate": ("ablate_is_argument", "mean"),
    "ablate_output_accuracy": ("ablate_output_answer_rank", _top1_rate),
    "dla_emb_mean": ("dla_emb", "mean"),
    "dla_attn_mean": ("dla_attn", "mean"),
    "dla_ffn_mean": ("dla_ffn", "mean"),
}
GROUP = ["model", "style", "context", "chat_template", "layer"]


def summarize(rows: list[dict]):
    """``summary.csv``: one row per model x style x context x chat template x layer.

    Besides ``SUMMARY_COLUMNS``: ``ablate_effect`` (answer top-1 rate with the block's FFN
    update removed minus without, decoded at that block), ``ablate_output_effect`` (the same
    at the output), ``transplant_acc_<target>`` and ``transplant_baseline_<target>`` (capital
    top-1 at the output of the target context with / without block l's source o-vector).
    Layer ``-1`` is the embedding; sublayer columns are empty there.
    """
    import pandas as pd

    table = layer_table(rows)
    if table.empty:
        return pd.DataFrame(columns=GROUP + list(SUMMARY_COLUMNS))
    grouped = table.groupby(GROUP, sort=True)
    cols = {}
    for name, (src, how) in SUMMARY_COLUMNS.items():
        cols[name] = grouped[src].agg(how) if src in table else float("nan")
    for target in TRANSPLANT_TARGETS:
        for kind in ("transplant", "baseline"):
            src = f"{kind}_{target}"
            if src in table:
                cols[f"{'transplant_acc' if kind == 'transplant' else 'transplant_baseline'}_{target}"] = \
                    grouped[src].agg(lambda s: s.dropna().astype(float).mean())
    summary = pd.DataFrame(cols).reset_index()
    summary["n_items"] = summary["n_items"].astype(int)
    summary["ablate_effect"] = summary["ablate_answer_top1_rate"] - summary["answer_top1_rate"]
    summary["ablate_output_effect"] = summary["ablate_output_accuracy"] - summary["output_accuracy"]
    summary.loc[summary["layer"] < 0, ["ablate_effect", "ablate_output_effect"]] = float("nan")
    summary["condition"] = [Condition(s, c, t).label for s, c, t in
                            zip(summary["style"], summary["context"], summary["chat_template"])]
    return summary


def report(rows: list[dict], pair_name: str) -> str:
    """The console summary: the seeds' questions (section 4.6) answered from the rows."""
    import pandas as pd

    if not rows:
        return "no results"
    t = layer_table(rows)
    blocks = t[t["layer"] >= 0]
    models = sorted(t["model"].unique())
    items = pd.DataFrame([{f: r[f] for f in KEY_FIELDS} | {
        "first_answer": r["first_top1_answer"], "first_argument": r["first_top1_argument"],
        "correct": r["correct"], "output": r["output_top_token"]} for r in rows])
    lines = [f"FFN capitals (Merullo et al. 2023) on pair {pair_name!r}: {items['item'].nunique()} items, "
             f"{len(items.groupby(['style', 'context', 'chat_template']))} conditions, models {', '.join(models)}"]

    def by_condition(frame, value, fmt):
        tab = frame.pivot_table(index=["style", "context", "chat_template"], columns="model", values=value,
                                aggfunc="mean" if value != "first_answer" else "median")
        out = []
        for (s, c, ct), vals in tab.iterrows():
            cells = "  ".join(f"{m}={fmt(vals.get(m))}" for m in models)
            out.append(f"  {Condition(s, c, ct).label:<22} {cells}")
        return out

    def pct(x):
        return "  n/a" if x is None or pd.isna(x) else f"{100 * x:4.0f}%"

    def num(x):
        return "never" if x is None or pd.isna(x) else f"{x:4.1f}"

    lines.append("Output accuracy (answer's first token top-1):")
    lines += by_condition(items.assign(correct=items["correct"].astype(float)), "correct", pct)
    if len(models) >= 2:
        a, b = models[:2]
        key = ["style", "context", "chat_template", "item", "layer"]
        both = blocks.pivot_table(index=key, columns="model", values="top_token", aggfunc="first").dropna()
        same = (both[a] == both[b])
        per_layer = same.groupby(level="layer").mean()
        lines.append(f"Same top tokens? the early-decoded top-1 token agrees between {a} and {b} for "
                     f"{pct(same.mean()).strip()} of (item, condition, layer); by layer: "
                     + " ".join(f"{int(l)}:{pct(v).strip()}" for l, v in per_layer.items()))
        first = items.pivot_table(index=["style", "context", "chat_template", "item"], columns="model",
                                  values="first_answer", aggfunc="first")
        if a in first and b in first:
            match = (first[a].fillna(-9) == first[b].fillna(-9)).mean()
            lines.append(f"Same layers? the answer first becomes top-1 at the same block in {a} and {b} for "
                         f"{pct(match).strip()} of (item, condition); median first block per condition:")
    else:
        lines.append("Median first block where the answer is top-1, per condition:")
    lines += by_condition(items, "first_answer", num)
    arg_top = t.groupby("model")["argument_rank"].apply(_top1_rate)
    arg_any = items.groupby("model")["first_argument"].apply(lambda s: s.notna().mean())
    lines.append("The argument (country) as top-1 at some block (Merullo's argument stage): "
                 + ", ".join(f"{m} {pct(arg_any[m]).strip()} of items" for m in models)
                 + f" ({', '.join(f'{m} {pct(arg_top[m]).strip()}' for m in models)} of (item, layer))")
    plain = items[(items["context"] == "plain") & (~items["chat_template"].astype(bool))]
    if plain["style"].nunique() > 1:
        lines.append("Consistent across prompting? (plain, raw text) median first block / accuracy by style:")
        for m in models:
            part = plain[plain["model"] == m]
            cells = ", ".join(f"{s}: {num(g['first_answer'].median())} / {pct(g['correct'].mean()).strip()}"
                              for s, g in part.groupby("style"))
            lines.append(f"  {m}: {cells}")
    lines.append("Which sublayer writes the answer? mean direct contribution to the answer logit "
                 "(largest attention vs largest FFN block):")
    for m in models:
        part = blocks[blocks["model"] == m].groupby("layer")[["dla_attn", "dla_ffn"]].mean()
        la, lf = part["dla_attn"].idxmax(), part["dla_ffn"].idxmax()
        writer = f"attention {la}" if part["dla_attn"][la] > part["dla_ffn"][lf] else f"FFN {lf}"
        lines.append(f"  {m}: attention block {la} ({part['dla_attn'][la]:+.2f}), FFN block {lf} "
                     f"({part['dla_ffn'][lf]:+.2f}) -> largest single writer: {writer}; summed over blocks: "
                     f"attention {part['dla_attn'].sum():+.2f}, FFN {part['dla_ffn'].sum():+.2f}")
    lines.append("FFN ablation (change in the answer's top-1 rate without block l's FFN update, decoded at l):")
    for m in models:
        part = blocks[blocks["model"] == m].groupby("layer")
        drop = part["ablate_answer_rank"].apply(_top1_rate) - part["answer_rank"].apply(_top1_rate)
        out_drop = part["ablate_output_answer_rank"].apply(_top1_rate) - part["correct"].mean()
        l1 = drop.idxmin()
        flips = part["ablate_is_argument"].mean()
        at_output = ""
        if out_drop.notna().any():
            l2 = out_drop.idxmin()
            at_output = f", at the output largest at block {l2} ({out_drop[l2]:+.0%})"
        lines.append(f"  {m}: largest drop at block {l1} ({drop[l1]:+.0%}){at_output}; top token becomes "
                     f"the argument in at most {pct(flips.max()).strip()} of items (block {flips.idxmax()})")
    lines.append("o-vector transplant (capital top-1 at the output; best block vs no vector):")
    for m in models:
        part = blocks[blocks["model"] == m].groupby("layer")
        cells = []
        for target in TRANSPLANT_TARGETS:
            col = f"transplant_{target}"
            if col in blocks:
                acc = part[col].mean()
                cells.append(f"{target}: {pct(acc.max()).strip()} at block {acc.idxmax()} vs "
                             f"{pct(part[f'baseline_{target}'].mean().iloc[0]).strip()}")
        lines.append(f"  {m}: " + "; ".join(cells))
    cued = items[items["context"] != "plain"]
    if not cued.empty:
        lines.append("Forbidden contexts: most frequent output token (share) and accuracy, pooled over prompt styles:")
        for (m, c, ct), g in cued.groupby(["model", "context", "chat_template"]):
            top = g["output"].value_counts()
            lines.append(f"  {m:<5} {c:<8} {'chat template' if ct else 'raw text':<13}: {top.index[0]!r} "
                         f"({pct(top.iloc[0] / len(g)).strip()}), accuracy {pct(g['correct'].mean()).strip()}")
    return "\n".join(lines)


# -- figures --------------------------------------------------------------------------------------
def make_figures(summary, rows: list[dict], out: Path) -> list[Path]:
    """All figures of the study into ``out`` (PNG + PDF) and ``top_tokens.md``."""
    from figures.first_top1 import plot_first_top1
    from figures.rank_by_layer import plot_contribution_by_layer, plot_rank_by_layer
    from figures.top_tokens_table import write_top_tokens_table
    from figures.transplant import plot_transplant

    order = {name: i for i, name in enumerate(STYLES + CONTEXTS)}  # rows: context x template; columns: style
    summary = summary.sort_values(["context", "chat_template", "style", "model", "layer"],
                                  key=lambda col: col.map(order) if col.name in ("style", "context") else col)
    paths = []
    paths += plot_rank_by_layer(summary, out / "answer_rank_by_layer", value_col="answer_rank_mean",
                                ylabel="mean rank of the answer (log)", log=True)
    paths += plot_rank_by_layer(summary, out / "answer_prob_by_layer", value_col="answer_prob_mean",
                                ylabel="mean probability of the answer")
    paths += plot_first_top1(summary, out / "first_top1_layer")
    paths += plot_transplant(summary, out / "transplant_by_layer", targets=list(TRANSPLANT_TARGETS))
    paths += plot_contribution_by_layer(summary, out / "sublayer_contribution")
    paths.append(write_top_tokens_table(rows, out / "top_tokens.md"))
    return paths


# -- CLI ------------------------------------------------------------------------------------------
def _csv_choice(valid: Sequence[str], aliases: dict | None = None):
    def parse(text: str) -> tuple[str, ...]:
        out: list[str] = []
        for part in (p.strip() for p in text.split(",") if p.strip()):
            expanded = (aliases or {}).get(part, (part,))
            for v in expanded:
                if v not in valid:
                    choices = list(valid) + list(aliases or {})
                    raise argparse.ArgumentTypeError(f"invalid choice {part!r}; choose from {', '.join(choices)}")
                if v not in out:
                    out.append(v)
        if not out:
            raise argparse.ArgumentTypeError("give at least one value")
        return tuple(out)

    return parse


def _on_off(text: str) -> tuple[bool, ...]:
    values = _csv_choice(("off", "on"))(text)
    return tuple(v == "on" for v in values)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m studies.ffn_capitals", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pair", default="toy", help="registry pair (interp.registry.PAIRS); default toy")
    p.add_argument("--base", help="path or hub id of a base model (with --chat: a custom pair)")
    p.add_argument("--chat", help="path or hub id of its RL-tuned counterpart")
    p.add_argument("--prompting", type=_csv_choice(STYLES), default=STYLES, help="zero,one,few (default all)")
    p.add_argument("--context", type=_csv_choice(CONTEXTS, CONTEXT_ALIASES), default=("plain", "harmful", "benign"),
                   help="plain,forbidden (forbidden = harmful and benign cues; default both)")
    p.add_argument("--chat-template", type=_on_off, default=(False, True),
                   help="off,on: raw text and/or the chat model's chat template (default both)")
    p.add_argument("--facts", help="CSV/JSONL of facts (subject,answer[,split,id]) instead of the toy world")
    p.add_argument("--split", choices=SPLITS, default="test", help="which facts are items (default held-out test)")
    p.add_argument("--limit", type=int, help="at most N items")
    p.add_argument("--source-items", type=int, default=8, help="source prompts averaged into the o-vector (1 = single)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("-k", "--top-k", type=int, default=5, help="top tokens kept per layer")
    p.add_argument("--out", help="output folder (default runs/ffn_capitals/<pair>/)")
    p.add_argument("--dtype", help="float32, bfloat16, float16, auto")
    p.add_argument("--device", help="e.g. cpu, cuda")
    p.add_argument("--device-map", help="accelerate device_map, e.g. auto")
    p.add_argument("--quantization", choices=("4bit", "8bit"), help="bitsandbytes (CUDA only)")
    p.add_argument("--seed", type=int, default=0, help="seeds torch/numpy/random; != 0 also redraws demonstrations")
    p.add_argument("--shard", help="i/n: run chunk shard i of n (results.shard-i-of-n.jsonl)")
    p.add_argument("--summary-only", action="store_true", help="recompute summary, figures, report from results*.jsonl")
    p.add_argument("--propagate-ablation", action="store_true",
                   help="also zero each block's FFN update and read the output (one more forward of L x batch)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    if args.source_items < 1:
        p.error("--source-items must be >= 1")
    if args.batch_size < 1:
        p.error("--batch-size must be >= 1")
    return args


def _template_tokenizer(pair):
    """The chat member's tokenizer (its chat template renders prompts for both models)."""
    import transformers

    from interp import LoadError

    source = pair.spec.source("chat")
    if source.startswith((".", "/", "~")) and not os.path.exists(source):
        raise LoadError(f"no model folder at {source!r}")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise LoadError(f"could not load the tokenizer of {source!r} to render its chat template "
                        f"({type(err).__name__}: {err}); use --chat-template off, or check the path / hub id") from None
    if not getattr(tok, "chat_template", None):
        raise LoadError(f"the tokenizer of {source!r} has no chat template; use --chat-template off")
    return tok


def run_study(args) -> int:
    import torch

    import interp
    from studies._common import ResultsLog, parse_shard, pending_chunks, progress, read_results, results_name, \
        run_dir, seed_everything, write_meta

    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    shard = parse_shard(args.shard)
    load_kwargs = {k: v for k, v in (("dtype", args.dtype), ("device", args.device),
                                     ("device_map", args.device_map), ("quantization", args.quantization)) if v}
    pair = interp.load_pair(args.pair, base=args.base, chat=args.chat, **load_kwargs)
    out = run_dir(STUDY, pair.name, args.out)
    timings: dict[str, float] = {}
    if not args.summary_only:
        facts = read_facts_file(args.facts) if args.facts else _toy_facts()
        items, sources = select_facts(facts, args.split, args.limit, args.source_items)
        pool = [f for f in facts if f.split == "train" and " " not in f.answer] or facts
        conditions = [Condition(s, c, t) for t in args.chat_template for c in args.context for s in args.prompting]
        template_tok = _template_tokenizer(pair) if any(c.chat_template for c in conditions) else None
        per_condition = make_items(conditions, items, sources, pool, template_tok, args.seed)
        log = ResultsLog(out / results_name(shard), KEY_FIELDS)

        def todo(member):
            def key_of(it: Item):
                return (member, it.condition.style, it.condition.context, it.condition.chat_template, it.fact.id)
            return [(cond, idx, chunk) for cond, (its, _) in per_condition.items()
                    for idx, chunk in pending_chunks(its, args.batch_size, key_of, log, shard)]

        if any(todo(m) for m in interp.registry.MEMBERS):
            for member, lm in pair:
                t0 = time.perf_counter()
                work = todo(member)
                vectors = {}
                for cond, _, chunk in progress(work, desc=f"{STUDY} {member}", total=len(work)):
                    with torch.no_grad():
                        if cond not in vectors:
                            vectors[cond] = source_vectors(lm, per_condition[cond][1])
                        rows = analyse_chunk(lm, chunk, vectors[cond], member, k=args.top_k,
                                             propagate=args.propagate_ablation)
                    log.write(rows)
                timings[f"{member}_s"] = round(time.perf_counter() - t0, 2)
        models = {m: pair.spec.source(m) for m in interp.registry.MEMBERS}
    rows = read_results(out, KEY_FIELDS)
    if not rows:
        from studies._common import StudyError

        raise StudyError(f"no results in {out} (results*.jsonl); run without --summary-only first")
    summary = summarize(rows)
    summary.to_csv(out / "summary.csv", index=False, float_format="%.6g")
    if not args.no_figures:
        t0 = time.perf_counter()
        make_figures(summary, rows, out)
        timings["figures_s"] = round(time.perf_counter() - t0, 2)
    text = report(rows, pair.name)
    timings["total_s"] = round(time.perf_counter() - started, 2)
    options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}
    extra = {"pair": asdict(pair.spec), "n_rows": len(rows), "key_fields": list(KEY_FIELDS),
             "transplant_targets": TRANSPLANT_TARGETS}
    if not args.summary_only:
        extra.update(models=models, n_items=len(items), items=[f.id for f in items],
                     transplant_sources=[f.id for f in sources],
                     conditions=[c.label for c in conditions], load_options=load_kwargs)
    write_meta(out, study=STUDY, options=options, seed=args.seed, timings=timings, **extra)
    print(text)
    print(f"\nwrote {out}/ (results*.jsonl, summary.csv, meta.json{'' if args.no_figures else ', figures, top_tokens.md'}) "
          f"in {timings['total_s']:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input / missing weights, no traceback)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = parse_args(argv)
    from interp import InterpError
    from studies._common import StudyError

    try:
        return run_study(args)
    except (InterpError, StudyError) as err:  # InterpError covers interp.LoadError
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
