"""Where the probability goes, per model and condition of the benchmark study.

Each scored row carries the final readout's split of the answer position's next-token
distribution (:mod:`probes.answer_mass`): ``option_mass``, the probability of the options'
distinct first tokens, and ``top_other``, the most probable tokens that start no option. This
module turns them into ``answer_mass.csv`` (one row per model x condition), a chat - base
comparison paired by item, the console lines and a figure.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

CONDITION = ["task", "shots", "chat_template"]
N_TOP = 5  # other tokens listed per model x condition


def _scored(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r.get("skipped") and r.get("option_mass") is not None]


def mass_table(rows: list[dict], n_boot: int = 1000):
    """Per model x condition: ``n``, mean ``option_mass`` (95% bootstrap interval over items),
    ``other_mass`` and the ``N_TOP`` other tokens with the largest mean probability over items
    (``top_other``: ``token=prob; ...``). An item lists only its own top tokens, so a token
    missing from an item's list counts 0 there: the means are lower bounds."""
    import numpy as np
    import pandas as pd

    from probes.calibration import bootstrap_ci

    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in _scored(rows):
        groups[(r["model"], *(r[c] for c in CONDITION))].append(r)
    out = []
    for key, rs in groups.items():
        mass = np.array([r["option_mass"] for r in rs], dtype=float)
        ci = bootstrap_ci(np.mean, mass, n_boot=n_boot)
        totals: dict[str, float] = defaultdict(float)
        for r in rs:
            for token, p in r["top_other"]:
                totals[token] += p / len(rs)
        top = sorted(totals.items(), key=lambda kv: -kv[1])[:N_TOP]
        out.append({**dict(zip(["model", *CONDITION], key)), "n": len(rs), "option_mass": ci.estimate,
                    "option_mass_low": ci.low, "option_mass_high": ci.high, "other_mass": 1 - ci.estimate,
                    "top_other": "; ".join(f"{t!r}={p:.3f}" for t, p in top)})
    return pd.DataFrame(out, columns=["model", *CONDITION, "n", "option_mass", "option_mass_low",
                                      "option_mass_high", "other_mass", "top_other"])


def mass_comparison(rows: list[dict]):
    """Chat - base option mass on the items both scored, paired bootstrap per condition."""
    import pandas as pd

    from probes.stats import paired_bootstrap

    by_item: dict[tuple, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for r in _scored(rows):
        by_item[tuple(r[c] for c in CONDITION)][r["item"]][r["model"]] = r["option_mass"]
    out = []
    for key, items in by_item.items():
        both = [v for v in items.values() if "base" in v and "chat" in v]
        if not both:
            continue
        pb = paired_bootstrap([v["base"] for v in both], [v["chat"] for v in both])
        out.append({**dict(zip(CONDITION, key)), "n": len(both), "base": sum(v["base"] for v in both) / len(both),
                    "chat": sum(v["chat"] for v in both) / len(both), "diff": pb.diff, "diff_low": pb.ci_low,
                    "diff_high": pb.ci_high, "bootstrap_p": pb.p_value})
    return pd.DataFrame(out, columns=[*CONDITION, "n", "base", "chat", "diff", "diff_low", "diff_high", "bootstrap_p"])


def mass_report(table, comparison) -> list[str]:
    if table.empty:
        return []
    lines = ["probability on the options' first tokens at the answer position (final readout; top other tokens):"]
    for key, g in table.groupby(CONDITION, sort=False):
        cells = "; ".join(f"{r.model} {r.option_mass:.2f} ({r.top_other})" for r in g.itertuples())
        lines.append(f"  {key[0]:14s} {key[1]}-shot {'chat' if key[2] else 'raw '}: {cells}")
    for r in comparison.itertuples():
        lines.append(f"  chat - base {r.task} {r.shots}-shot {'chat' if r.chat_template else 'raw'}: "
                     f"{r.diff:+.3g} [{r.diff_low:+.3g}, {r.diff_high:+.3g}] (n={r.n})")
    return lines


def mass_figures(table, out: Path) -> list[Path]:
    from figures.task_bars import plot_task_bars

    paths = []
    for (shots, tmpl), g in table.groupby(["shots", "chat_template"]):
        paths += plot_task_bars(
            g.rename(columns={"option_mass_low": "ci_low", "option_mass_high": "ci_high"}),
            out / f"option_mass_{shots}shot_{'chat' if tmpl else 'raw'}", value_col="option_mass",
            ylabel="P(options' first tokens)",
            title=f"probability on the options at the answer position, {shots}-shot, chat template {'on' if tmpl else 'off'}")
    return paths
