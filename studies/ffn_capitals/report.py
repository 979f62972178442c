"""The console report: the seeds' questions answered from the result rows."""

from __future__ import annotations

from studies._lens import lens_label
from studies.ffn_capitals.analysis import KEY_FIELDS, TRANSPLANT_TARGETS
from studies.ffn_capitals.items import Condition
from studies.ffn_capitals.summary import layer_table, top1_rate


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
             f"{len(items.groupby(['style', 'context', 'chat_template']))} conditions, models {', '.join(models)}; "
             f"blocks early-decoded through the {lens_label(r.get('lens', 'logit') for r in rows)}"]

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
    arg_top = t.groupby("model")["argument_rank"].apply(top1_rate)
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
        drop = part["ablate_answer_rank"].apply(top1_rate) - part["answer_rank"].apply(top1_rate)
        out_drop = part["ablate_output_answer_rank"].apply(top1_rate) - part["correct"].mean()
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


