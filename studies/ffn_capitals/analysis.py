"""The per-item analysis: thin calls into ``interp`` (early decoding through a lens, FFN
ablation, o-vector transplant, direct logit attribution) turned into one result row per item.

The lens (``--lens``, default the logit lens) reads the residual stream of each block: the
early decoding of ``resid_post`` and of the residual without the block's FFN update. The
embedding (layer -1) has no translator, and a lone sublayer update (``ffn_top_tokens``,
``attn_answer_rank``) is not a residual a tuned lens was trained on: those are always read
through the logit lens. ``correct`` and ``output_top_token`` are the model's own output."""

from __future__ import annotations

from studies.ffn_capitals.items import Item, continuation_tokens

KEY_FIELDS = ("model", "style", "context", "chat_template", "item")
TRANSPLANT_TARGETS = {  # target contexts that mention the country without asking for its capital
    "bare": "{subject}:",
    "language": "The language of {subject} is",
}


def source_vectors(lm, sources: list[Item]):
    """Mean FFN update of each block at the sources' last position, ``[layer, d_model]``."""
    from interp.transplant import updates

    return updates(lm, [s.prompt for s in sources], hook="mlp_out").float().mean(1)


def _r(x: float, digits: int = 6) -> float:
    return round(float(x), digits)


def _cat(first, rest):
    """Two ``LayerReadout`` of the same positions, layers of ``first`` then of ``rest``."""
    import dataclasses

    import torch

    names = [f.name for f in dataclasses.fields(first)]
    return type(first)(*[None if getattr(first, n) is None else torch.cat([getattr(first, n), getattr(rest, n)])
                         for n in names])


def analyse_chunk(lm, chunk: list[Item], vectors, member: str, k: int = 5, propagate: bool = False, lens=None,
                  lens_fields: dict | None = None) -> list[dict]:
    """Result rows for one batch of items of one condition (fields: see ``studies.ffn_capitals``).
    ``lens`` decodes the blocks' residuals (default the logit lens; module doc); ``lens_fields``
    (default ``{"lens": "logit"}``) go into every row."""
    import torch

    from interp.direct import direct_logit_attribution
    from interp.lens import readout
    from interp.transplant import ablate_each_layer, transplant_each_layer

    tok = lm.tokenizer
    prompts = [it.prompt for it in chunk]
    ans = [continuation_tokens(tok, p, it.fact.answer) for p, it in zip(prompts, chunk)]
    arg = [continuation_tokens(tok, p, it.fact.subject) for p, it in zip(prompts, chunk)]
    targets = torch.tensor([[a[0], g[0]] for a, g in zip(ans, arg)])  # [batch, 2]: answer, argument
    L = lm.n_layers
    run = lm.run(prompts, capture=["blocks.0.hook_resid_pre", "resid_post", "attn_out", "mlp_out"], positions=-1)
    emb = run.cache["blocks.0.hook_resid_pre"]  # [batch, 1, d]
    post, attn, mlp = (run.cache.stack(p) for p in ("resid_post", "attn_out", "mlp_out"))  # [layer, batch, 1, d]
    decoded = _cat(readout(lm, emb[None], targets=targets, k=k),  # [1 + layer, batch, 1, ...]
                   readout(lm, post, targets=targets, k=k, lens=lens))
    output = readout(lm, post[-1:], targets=targets, k=1)  # the logit lens of the last block: the model's output
    ffn_alone = readout(lm, mlp, targets=targets, k=k)
    attn_alone = readout(lm, attn, targets=targets, k=1)
    ablated = readout(lm, post - mlp, targets=targets, k=1, lens=lens)  # == interp.transplant.ablate_each_layer
    ablated_out = ablate_each_layer(lm, prompts, targets_ids=targets[:, :1], k=1, propagate=True) if propagate else None
    comps = torch.cat([emb[:, 0][None], attn[:, :, 0], mlp[:, :, 0]])  # [1 + 2 layer, batch, d]
    direct = direct_logit_attribution(lm, post[-1, :, 0], comps, targets[:, 0])
    dla, dla_bias = direct.contributions, direct.bias
    out_logits = run.logits[:, -1].float()
    dla_total = out_logits.gather(-1, targets[:, :1])[:, 0] - out_logits.mean(-1)

    transplanted = {}
    for name, template in TRANSPLANT_TARGETS.items():
        t_prompts = [template.format(subject=it.fact.subject) for it in chunk]
        t_ids = torch.tensor([continuation_tokens(tok, p, it.fact.answer)[0] for p, it in zip(t_prompts, chunk)])
        transplanted[name] = transplant_each_layer(lm, t_prompts, vectors, targets_ids=t_ids[:, None], k=1)

    def toks(ids) -> list[str]:
        return tok.convert_ids_to_tokens([int(i) for i in ids])

    rows = []
    for b, it in enumerate(chunk):
        rank = decoded.target_rank[:, b, 0]  # [1 + layer, 2]
        prob = decoded.target_prob[:, b, 0]

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
            "layers": list(range(-1, L)), **(lens_fields or {"lens": "logit"}),
            "answer_rank": rank[:, 0].tolist(), "answer_prob": [_r(p) for p in prob[:, 0]],
            "argument_rank": rank[:, 1].tolist(), "argument_prob": [_r(p) for p in prob[:, 1]],
            "top_tokens": [toks(ids) for ids in decoded.top_ids[:, b, 0]],
            "top_probs": [[_r(p, 4) for p in ps] for ps in decoded.top_probs[:, b, 0]],
            "first_top1_answer": first_top1(0), "first_top1_argument": first_top1(1),
            "output_top_token": toks([output.top_ids[0, b, 0, 0]])[0],
            "correct": int(output.target_rank[0, b, 0, 0]) == 0,
            "ffn_top_tokens": [toks(ids) for ids in ffn_alone.top_ids[:, b, 0]],
            "ffn_answer_rank": ffn_alone.target_rank[:, b, 0, 0].tolist(),
            "attn_top_token": [toks(ids)[0] for ids in attn_alone.top_ids[:, b, 0]],
            "attn_answer_rank": attn_alone.target_rank[:, b, 0, 0].tolist(),
            "ablate_answer_rank": ablated.target_rank[:, b, 0, 0].tolist(),
            "ablate_top_token": [toks(ids)[0] for ids in ablated.top_ids[:, b, 0]],
            "ablate_top_is_argument": [bool(ids[0] == targets[b, 1]) for ids in ablated.top_ids[:, b, 0]],
            "ablate_output_answer_rank": ablated_out.target_rank[:, b, 0].tolist() if propagate else None,
            "ablate_output_top_token": toks(ablated_out.top_ids[:, b, 0]) if propagate else None,
            "dla_emb": _r(dla[0, b], 5),
            "dla_attn": [_r(v, 5) for v in dla[1:1 + L, b]],
            "dla_ffn": [_r(v, 5) for v in dla[1 + L:, b]],
            "dla_bias": _r(dla_bias[b], 5), "dla_total": _r(dla_total[b], 5),
            "transplant": {
                name: {"baseline_rank": int(t.baseline.target_rank[b, 0]),
                       "baseline_top_token": toks([t.baseline.top_ids[b, 0]])[0],
                       "rank": t.layers.target_rank[:, b, 0].tolist(), "top_token": toks(t.layers.top_ids[:, b, 0]),
                       "top1": [int(r) == 0 for r in t.layers.target_rank[:, b, 0]]}
                for name, t in transplanted.items()
            },
        }
        rows.append(row)
    return rows


