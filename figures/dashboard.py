"""A latent dashboard: each latent's top-activating contexts as markdown (the token in bold,
its activation after it) and as one self-contained HTML page (every context token shaded by the
latent's activation on it, the top token outlined).

Input: ``{latent: [Context, ...]}`` (``interp.dictionaries.contexts.top_contexts``), a function
from token ids to strings, and per-latent header fields (class, norms, betas, ...).
"""

from __future__ import annotations

import html
import os
from collections.abc import Callable, Mapping
from pathlib import Path


def _header(latent: int, info: Mapping) -> str:
    fields = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
    return f"latent {latent}" + (f" ({fields})" if fields else "")


def write_dashboard(contexts: Mapping[int, list], decode: Callable[[int], str], stem: str | os.PathLike[str],
                    info: Mapping[int, Mapping] | None = None, title: str = "Top-activating contexts") -> list[Path]:
    """Write ``stem.md`` and ``stem.html``; return their paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    info = info or {}
    md = [f"# {title}", "", "Each line: a context, the top token in **bold** with the latent's activation [in brackets].", ""]
    page = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:60em}span.t{padding:0 1px;border-radius:2px}"
            "span.top{outline:2px solid #c00}div.c{margin:2px 0;font-family:monospace}</style>",
            f"<h1>{html.escape(title)}</h1>"]
    for latent, found in contexts.items():
        head = _header(latent, info.get(latent, {}))
        md += [f"## {head}", ""]
        page.append(f"<h2>{html.escape(head)}</h2>")
        if not found:
            md += ["(never fires on this corpus)", ""]
            page.append("<p>(never fires on this corpus)</p>")
            continue
        peak = max(c.activation for c in found) or 1.0
        for c in found:
            words = [decode(t) for t in c.token_ids]
            shown = [f"**{w}** [{c.activation:.2f}]" if p == c.target else w for p, w in enumerate(words)]
            md.append("- " + " ".join(shown).replace("|", "\\|"))
            spans = []
            for p, (w, a) in enumerate(zip(words, c.acts)):
                alpha = max(0.0, min(1.0, a / peak))
                cls = "t top" if p == c.target else "t"
                spans.append(f"<span class='{cls}' style='background:rgba(221,132,82,{alpha:.2f})' "
                             f"title='{a:.3f}'>{html.escape(w)}</span>")
            page.append(f"<div class='c'>{' '.join(spans)} &nbsp;[{c.activation:.2f}]</div>")
        md.append("")
    paths = [stem.with_name(stem.name + ".md"), stem.with_name(stem.name + ".html")]
    paths[0].write_text("\n".join(md) + "\n", encoding="utf-8")
    paths[1].write_text("\n".join(page) + "\n", encoding="utf-8")
    return paths
