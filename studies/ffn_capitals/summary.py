"""From result rows to the tidy per-layer table and ``summary.csv`` (no model needed)."""

from __future__ import annotations

from studies.ffn_capitals.analysis import KEY_FIELDS, TRANSPLANT_TARGETS
from studies.ffn_capitals.items import Condition


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


def top1_rate(ranks) -> float:
    """Fraction of ranks equal to 0, ignoring missing values (NaN if all are missing)."""
    ranks = ranks.dropna()
    return float((ranks == 0).mean()) if len(ranks) else float("nan")


SUMMARY_COLUMNS = {  # column -> (source column of layer_table, reduction); rates are fractions of items
    "n_items": ("answer_rank", "size"),
    "answer_top1_rate": ("answer_rank", top1_rate),
    "answer_rank_mean": ("answer_rank", "mean"),
    "answer_rank_median": ("answer_rank", "median"),
    "answer_prob_mean": ("answer_prob", "mean"),
    "argument_top1_rate": ("argument_rank", top1_rate),
    "argument_rank_mean": ("argument_rank", "mean"),
    "argument_prob_mean": ("argument_prob", "mean"),
    "answer_first_top1_frac": ("answer_first", "mean"),
    "argument_first_top1_frac": ("argument_first", "mean"),
    "output_accuracy": ("correct", "mean"),
    "ffn_alone_answer_top1_rate": ("ffn_answer_rank", top1_rate),
    "attn_alone_answer_top1_rate": ("attn_answer_rank", top1_rate),
    "ablate_answer_top1_rate": ("ablate_answer_rank", top1_rate),
    "ablate_argument_top1_rate": ("ablate_is_argument", "mean"),
    "ablate_output_accuracy": ("ablate_output_answer_rank", top1_rate),
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
    Layer ``-1`` is the embedding; sublayer columns are empty there. ``lens`` and
    ``lens_sha256``: what decoded the blocks (``studies._lens``; the embedding and sublayer
    updates are always read through the logit lens).
    """
    import pandas as pd

    from studies._lens import add_lens_columns

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
    summary = add_lens_columns(summary, rows)
    summary["condition"] = [Condition(s, c, t).label for s, c, t in
                            zip(summary["style"], summary["context"], summary["chat_template"])]
    return summary


