"""Model-diff part ``amplify``: logit diff amplification (Aranguri & McGrath 2025,
:mod:`interp.diff.amplify`): answers decoded from ``chat + alpha * (chat - base)``.

OPT-IN (``--parts amplify`` or ``--parts all``; not in the default parts): it is the one part
that holds BOTH models in memory at once, since every decoding step needs both next-token
distributions; its ``run`` prints a line saying so. ``alpha=0`` is the chat model's own
decoding (greedy: its greedy answer), ``alpha=-1`` the base model's.

Prompts: the token-shift part's prompt set (:func:`studies.model_diff.token_shift.prompt_set`,
so ``--shift-prompts`` and ``--shift-chat-template`` apply) with at most ``--amp-prompts`` per
kind. Per ``--amp-modes`` (``greedy``; ``sample``: seeded per prompt by
:func:`interp.diff.token_shift.prompt_seed`) and ``--amp-alphas``, one row per prompt goes to
the study's ``results.jsonl`` (``part="amplify"``, ``key`` = ``[mode, alpha, prompt_id]``; a
mode x alpha whose rows exist is skipped on resume). From the rows alone it writes
``amplify.csv`` (``prompt_id``, ``prompt_kind``, ``alpha``, ``mode``, ``text``, ``refused``) and
``summary.csv`` rows ``refusal_rate`` and ``n`` per ``mode/kind`` (field ``layer`` empty) and
alpha (group ``mode/kind alpha=A``), and the figure ``amplify_refusal_rate.png/.pdf`` of those
rates by alpha, one line per kind, one panel per mode.
``refused``: the answer starts with the first word of the refusal text (the ADL part's target:
``--adl-targets``, for the toy pair its refusal sentence, whose first word is ``Sorry``); empty
when there is none.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from studies._common import StudyError
from studies.model_diff.parts import Part

NAME = "amplify"
ROW_OPTIONS = ("amp_alphas", "amp_prompts", "amp_max_new_tokens", "amp_modes", "amp_temperature")
OUTPUTS = ("amplify.csv",)
COLUMNS = ["prompt_id", "prompt_kind", "alpha", "mode", "text", "refused"]


def add_arguments(parser) -> None:
    group = parser.add_argument_group("logit diff amplification (opt-in: holds both models in memory)")
    group.add_argument("--amp-alphas", default="0,1,4", help="comma-separated alphas (default 0,1,4; -1: the base model)")
    group.add_argument("--amp-prompts", type=int, default=10, help="prompts per kind (default 10; 0: all)")
    group.add_argument("--amp-max-new-tokens", type=int, default=12, help="answer length cap (default 12)")
    group.add_argument("--amp-modes", default="greedy", help="greedy, sample or both (default greedy)")
    group.add_argument("--amp-temperature", type=float, default=1.0, help="sampling temperature (default 1)")


def _alphas(args) -> list[float]:
    from studies.model_diff.adl import _numbers

    return _numbers(args.amp_alphas, "--amp-alphas")


def _modes(args) -> tuple[str, ...]:
    from interp.diff.token_shift import MODES

    modes = tuple(dict.fromkeys(m.strip() for m in str(args.amp_modes).split(",") if m.strip()))
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise StudyError(f"--amp-modes {args.amp_modes!r}: choose from {', '.join(MODES)} (comma-separated)")
    return modes


def _prompts(args) -> list[dict]:
    from studies.model_diff.token_shift import prompt_set

    n = int(getattr(args, "amp_prompts", 10))
    if n < 0:
        raise StudyError(f"--amp-prompts must be >= 0 (0: all), got {n}")
    return prompt_set(argparse.Namespace(**{**vars(args), "shift_limit": n}))


def _key(mode: str, alpha: float, prompt_id: str) -> str:
    return json.dumps([mode, float(alpha), prompt_id])


def _refused(text: str, refusal: str | None) -> bool | None:
    if not refusal or not refusal.split():
        return None
    return text.strip().startswith(refusal.split()[0])


def run(ctx) -> None:
    """Append the rows of the mode x alpha not yet done (see the module docstring)."""
    import time

    from interp.diff.amplify import amplified_tokens
    from interp.diff.token_shift import prompt_seed
    from studies._common import progress
    from studies.model_diff.adl import _targets
    from studies.model_diff.token_shift import _free, _render

    args, pair = ctx.args, ctx.pair
    alphas, modes = _alphas(args), _modes(args)
    if int(args.amp_max_new_tokens) < 1:
        raise StudyError(f"--amp-max-new-tokens must be >= 1, got {args.amp_max_new_tokens}")
    prompts = _prompts(args)
    # a mode x alpha's rows are written in one batch, so its first prompt stands for all of them
    todo = [(m, a) for m in modes for a in alphas if not ctx.log.done((NAME, _key(m, a, prompts[0]["id"])))]
    if not todo:
        return
    t0 = time.perf_counter()
    print(f"amplify: holding both models (base and chat of {pair.spec.name}) in memory at once", flush=True)
    base, chat = pair.load("base"), pair.load("chat")
    texts = _render(chat, prompts, args)
    refusal = _targets(args, pair)
    seed = int(getattr(args, "seed", 0) or 0)
    for mode, alpha in progress(todo, desc="amplify (mode x alpha)"):
        new = amplified_tokens(base, chat, texts, alpha=alpha, max_new_tokens=int(args.amp_max_new_tokens),
                               greedy=mode == "greedy", temperature=float(args.amp_temperature),
                               seed=[prompt_seed(seed, p["id"]) for p in prompts])
        answers = [chat.tokenizer.decode(n, skip_special_tokens=True) for n in new]
        ctx.log.write([{"part": NAME, "key": _key(mode, alpha, p["id"]), "prompt_id": p["id"], "prompt_kind": p["kind"],
                        "alpha": float(alpha), "mode": mode, "text": t, "refused": _refused(t, refusal)}
                       for p, t in zip(prompts, answers)])
    _free(base)
    _free(chat)
    ctx.timings[f"{NAME}_s"] = round(time.perf_counter() - t0, 2)


def work(args) -> dict:
    """The prompts (ids and kinds), for the run's fingerprint."""
    return {"prompts": [[p["id"], p["kind"]] for p in _prompts(args)]}


def _table(rows: list[dict]):
    import pandas as pd

    return pd.DataFrame([{c: r[c] for c in COLUMNS} for r in rows], columns=COLUMNS).sort_values(
        ["mode", "alpha", "prompt_kind", "prompt_id"], kind="stable")


def tables(rows: list[dict], out: Path) -> list[Path]:
    _table(rows).to_csv(Path(out) / "amplify.csv", index=False)
    return [Path(out) / name for name in OUTPUTS]


def refusal_rates(rows: list[dict]):
    """Per mode, kind and alpha: ``n`` answers and the fraction ``refusal_rate`` refused (NaN
    when there is no refusal text): the summary's rows and the figure's points."""
    import pandas as pd

    out = [{"mode": mode, "prompt_kind": kind, "alpha": float(alpha), "n": int(len(g)),
            "refusal_rate": float(g["refused"].astype(bool).mean()) if g["refused"].notna().all() else float("nan")}
           for (mode, kind, alpha), g in _table(rows).groupby(["mode", "prompt_kind", "alpha"], sort=True)]
    return pd.DataFrame(out, columns=["mode", "prompt_kind", "alpha", "n", "refusal_rate"])


def summary(rows: list[dict]) -> list[dict]:
    """Per mode, kind and alpha (group ``mode/kind alpha=A``): ``n`` and ``refusal_rate``."""
    out = []
    for r in refusal_rates(rows).itertuples():
        group = f"{r.mode}/{r.prompt_kind} alpha={r.alpha:g}"
        out.append({"part": NAME, "group": group, "layer": None, "metric": "n", "value": int(r.n)})
        if r.refusal_rate == r.refusal_rate:
            out.append({"part": NAME, "group": group, "layer": None, "metric": "refusal_rate",
                        "value": float(r.refusal_rate)})
    return out


def figures(rows: list[dict], out: Path) -> list[Path]:
    """Refusal rate by alpha, one line per prompt kind, one panel per mode (none without a refusal text)."""
    rates = refusal_rates(rows).dropna(subset=["refusal_rate"])
    if rates.empty:
        return []
    from figures.by_layer import plot_by_layer

    return list(plot_by_layer(rates, Path(out) / "amplify_refusal_rate", value_col="refusal_rate", layer_col="alpha",
                              model_col="prompt_kind", facet_col="mode", ylabel="refusal rate",
                              title="refusal under chat + alpha (chat - base)\n(alpha 0: chat, -1: base)"))


PART = Part(NAME, add_arguments, ROW_OPTIONS, run, tables, summary, figures, work, outputs=OUTPUTS, opt_in=True)
