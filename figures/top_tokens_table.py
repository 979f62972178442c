"""A markdown table of early-decoded top tokens per layer, base vs chat, for example items.

Input: result rows of ``studies.ffn_capitals`` (dicts with ``model``, ``style``,
``context``, ``chat_template``, ``item``, ``prompt``, ``answer_token``, ``argument_token``,
``layers``, ``top_tokens``, ``ffn_top_tokens``, ``ablate_top_token``). For each condition the
first item (by id) that every model ran is shown: per layer, each model's top-3 tokens of the
residual stream, the top token of the block's FFN update alone, and the residual's top token
with that update removed.
"""

from __future__ import annotations

import os
from pathlib import Path


def _cell(tokens) -> str:
    return " ".join(f"`{t}`".replace("|", "\\|") for t in tokens)


def write_top_tokens_table(rows: list[dict], path: str | os.PathLike[str], n_top: int = 3,
                           examples_per_condition: int = 1, lens: str = "logit lens") -> Path:
    """Write the markdown file and return its path; ``lens`` names what decoded the residual
    stream (the FFN update alone is read through the logit lens)."""
    path = Path(path)
    groups: dict[tuple, dict[str, dict[str, dict]]] = {}
    for r in rows:
        cond = (r["style"], r["context"], bool(r["chat_template"]))
        groups.setdefault(cond, {}).setdefault(r["item"], {})[r["model"]] = r
    models = sorted({r["model"] for r in rows})
    lines = [f"# Top tokens by layer ({lens} at the last prompt position)", "",
             "Per model: top-3 tokens of the residual stream after the block; **FFN**: top token of the "
             "block's FFN update decoded alone (logit lens); **w/o FFN**: top token with that update removed. "
             "Layer `emb` is the embedding.", ""]
    for cond in sorted(groups):
        complete = [i for i in sorted(groups[cond]) if all(m in groups[cond][i] for m in models)]
        for item in complete[:examples_per_condition]:
            by_model = groups[cond][item]
            first = by_model[models[0]]
            style, context, chat = cond
            lines += [f"## {style} / {context} / {'chat template' if chat else 'raw text'}: {item}", "",
                      "```", first["prompt"], "```", "",
                      f"answer first token `{first['answer_token']}`, argument first token `{first['argument_token']}`", ""]
            header = ["layer"] + [f"{m} {what}" for m in models for what in ("top-3", "FFN", "w/o FFN")]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for j, layer in enumerate(first["layers"]):
                cells = ["emb" if layer < 0 else str(layer)]
                for m in models:
                    r = by_model[m]
                    cells.append(_cell(r["top_tokens"][j][:n_top]))
                    cells.append(_cell(r["ffn_top_tokens"][layer][:1]) if layer >= 0 else "")
                    cells.append(_cell([r["ablate_top_token"][layer]]) if layer >= 0 else "")
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
