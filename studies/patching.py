"""Where the answer is carried: activation patching on minimal pairs, base vs RL-tuned.

    python -m studies.patching                                  # toy pair, held-out capitals
    python -m studies.patching --pair llama2-7b --hooks resid_pre,attn_out,mlp_out --limit 50

Two facts (X -> A, Y -> B) whose prompts (``The capital of X is``, ``The capital of Y is``)
have the same token length make a minimal pair: the corrupted prompt names X, the clean one
Y. For every hook point, layer and position, ``interp.patching.patch_sweep`` patches the
clean activation into the corrupted run and reads ``logit(B) - logit(A)`` (first answer
tokens) at the last position. A cell's *restored* value is the fraction of the clean run's
logit difference it brings back: ``(patched - corrupted) / (clean - corrupted)``; 1 means the
cell alone carries the answer. Positions are aligned across pairs by their role: the
subject's first, middle and last tokens, and the template's tokens by their offset from the
subject (``is@+1`` is the token right after it).

Every fact accounted for: facts that make no minimal pair (the answer's first token cannot be
told, or no other fact matches as described) are named on the console and listed in
``meta.json`` (``unpaired_facts``); pairs whose clean and corrupted logit differences are within
``MIN_GAP`` have no restored fraction and are counted in ``summary.csv`` (``n_pairs``,
``n_pairs_excluded``, ``exclude_reason``) and on the console.

Outputs (``runs/patching/<pair>/`` or ``--out``): ``results.jsonl`` (one row per model x
style x pair x hook x layer x position; resumable), ``summary.csv`` (mean restored fraction
per model x style x hook x layer x role), ``meta.json``, and a heatmap per style and hook
(base, chat, chat - base) as PNG + PDF.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from studies._common import (
    PLACEMENT_OPTIONS,
    StudyError,
    add_model_options,
    add_pair_options,
    add_run_options,
    load_kwargs,
)

STUDY = "patching"
STYLES = {"zero": "The capital of {subject} is", "qa": "Q: What is the capital of {subject}? A:"}
HOOKS = ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")
KEY_FIELDS = ("model", "style", "pair", "hook", "layer", "position")
MIN_GAP = 1e-3  # pairs whose clean and corrupted logit differences differ less are not normalised
# Options that decide a row (in the run's fingerprint, studies._identity.run_fingerprint): which
# facts and minimal pairs, prompt styles and hook points, and how the models are loaded. The
# models enter by identity and --seed on its own; the others choose where and how fast.
ROW_OPTIONS = ("hooks", "styles", "facts", "split", "limit", "dtype", "device", "device_map", "quantization")
OTHER_OPTIONS = ("pair", "base", "chat", "seed", "out", "overwrite", "shard", "summary_only", "no_figures", "threads")
OTHER_OPTIONS += PLACEMENT_OPTIONS  # where the model runs, not what it computes
TABLES = ("summary.csv",)  # written besides results, meta and figures


@dataclass(frozen=True)
class Prompt:
    """One fact's prompt, tokenized: ``ids`` ``[seq]``, the subject's token span, the answer's
    first token."""

    subject: str
    answer: str
    ids: tuple[int, ...]
    subject_span: tuple[int, int]
    answer_token: int


@dataclass(frozen=True)
class MinimalPair:
    style: str
    corrupted: Prompt
    clean: Prompt

    @property
    def id(self) -> str:
        return f"{self.corrupted.subject}>{self.clean.subject}"


def tokenize(tokenizer, style: str, subject: str, answer: str) -> Prompt | None:
    """The prompt of ``style`` for a fact, or ``None`` if its answer's first token cannot be
    told (the prompt's tokens are not a prefix of prompt + answer)."""
    text = STYLES[style].format(subject=subject)
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    start = text.index(subject)
    end = start + len(subject)
    inside = [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]
    full = tokenizer(f"{text} {answer}")["input_ids"]
    if not inside or full[:len(ids)] != ids or len(full) <= len(ids):
        return None
    return Prompt(subject, answer, tuple(ids), (inside[0], inside[-1] + 1), full[len(ids)])


UNTOKENIZABLE = "its answer's first token cannot be told (the prompt's tokens are not a prefix of prompt + answer)"
UNMATCHED = "no other fact's prompt has its token length and subject span with another first answer token"


@dataclass(frozen=True)
class Pairing:
    """The minimal pairs of one style, and the facts tried as a clean prompt that made none."""

    style: str
    pairs: list[MinimalPair]
    unpaired: dict[str, str]  # subject -> reason

    def notes(self) -> list[str]:
        """Console lines naming the unpaired facts by reason."""
        by_reason: dict[str, list[str]] = {}
        for subject, reason in self.unpaired.items():
            by_reason.setdefault(reason, []).append(subject)
        return [f"{self.style} prompts: {len(subjects)} fact(s) make no minimal pair ({', '.join(subjects[:5])}"
                f"{', ...' if len(subjects) > 5 else ''}): {reason}" for reason, subjects in by_reason.items()]


def pair_facts(tokenizer, facts: Sequence[tuple[str, str]], style: str, limit: int | None, seed: int) -> Pairing:
    """Minimal pairs: each fact (in a seeded order) as the clean prompt, with the next fact of
    the same token length and a different first answer token as the corrupted one; and the
    facts that made none (facts after the ``limit``-th pair are not tried)."""
    prompts, unpaired = [], {}
    for subject, answer in facts:
        prompt = tokenize(tokenizer, style, subject, answer)
        if prompt is None:
            unpaired[subject] = UNTOKENIZABLE
        else:
            prompts.append(prompt)
    random.Random(seed).shuffle(prompts)
    pairs = []
    for i, clean in enumerate(prompts):
        for corrupted in prompts[i + 1:] + prompts[:i]:
            if len(corrupted.ids) == len(clean.ids) and corrupted.answer_token != clean.answer_token \
                    and corrupted.subject_span == clean.subject_span:
                pairs.append(MinimalPair(style, corrupted, clean))
                break
        else:
            unpaired[clean.subject] = UNMATCHED
        if limit is not None and len(pairs) >= limit:
            break
    return Pairing(style, pairs, unpaired)


def make_pairs(tokenizer, facts: Sequence[tuple[str, str]], style: str, limit: int | None, seed: int) -> list[MinimalPair]:
    """The minimal pairs of :func:`pair_facts`."""
    return pair_facts(tokenizer, facts, style, limit, seed).pairs


def roles(tokenizer, prompt: Prompt) -> list[str]:
    """Each position's role: ``subject_first`` / ``subject_mid`` / ``subject_last``, or the
    template token and its offset from the subject (``of@-1``, ``is@+1``)."""
    start, end = prompt.subject_span
    out = []
    for i, token in enumerate(tokenizer.convert_ids_to_tokens(list(prompt.ids))):
        if start <= i < end:
            out.append("subject_first" if i == start else "subject_last" if i == end - 1 else "subject_mid")
        else:
            out.append(f"{token}@{i - start if i < start else i - end + 1:+d}")
    return out


def analyse_pair(lm, pair: MinimalPair, member: str, hooks: Sequence[str]) -> list[dict]:
    """Rows of one minimal pair for one model: every hook x layer x position."""
    import torch

    from interp.patching import baseline_metric, logit_diff, patch_sweep

    corrupted = torch.tensor([pair.corrupted.ids])
    clean = torch.tensor([pair.clean.ids])
    metric = logit_diff(pair.clean.answer_token, pair.corrupted.answer_token)
    low = float(baseline_metric(lm, corrupted, metric))
    high = float(baseline_metric(lm, clean, metric))
    gap = high - low
    labels = roles(lm.tokenizer, pair.corrupted)
    rows = []
    for hook in hooks:
        sweep = patch_sweep(lm, corrupted, clean, metric, hook=hook, progress=False)
        for layer in range(sweep.shape[0]):
            for pos in range(sweep.shape[1]):
                effect = float(sweep[layer, pos]) - low
                rows.append({
                    "model": member, "style": pair.style, "pair": pair.id, "hook": hook, "layer": layer,
                    "position": pos, "role": labels[pos], "is_last": pos == sweep.shape[1] - 1,
                    "effect": effect, "restored": effect / gap if abs(gap) >= MIN_GAP else None,
                    "corrupted_metric": low, "clean_metric": high,
                })
    return rows


EXCLUDED = f"clean and corrupted logit differences within {MIN_GAP:g} (no restored fraction)"


def summarize(rows: list[dict]):
    """Mean restored fraction and count (``n``) per model x style x hook x layer x role, roles
    in prompt order; ``n_pairs`` of the model x style x hook, of which ``n_pairs_excluded``
    have no restored fraction (``exclude_reason``). ``attrs["notes"]`` names the exclusions."""
    import pandas as pd

    every = pd.DataFrame(rows)
    excluded = every.groupby(["model", "style", "hook", "pair"], sort=False)["restored"].agg(lambda r: r.isna().all())
    pairs = excluded.groupby(level=[0, 1, 2], sort=False).agg(n_pairs="size", n_pairs_excluded="sum")
    df = every[every["restored"].notna()]
    keys = ["model", "style", "hook", "layer", "role"]
    out = (df.groupby(keys, sort=False)
             .agg(restored_mean=("restored", "mean"), effect_mean=("effect", "mean"), n=("restored", "size"),
                  position_mean=("position", "mean"), is_last=("is_last", "all"))
             .reset_index())
    out = out.join(pairs, on=["model", "style", "hook"])
    out["exclude_reason"] = [EXCLUDED if n else "" for n in out["n_pairs_excluded"]]
    out = out.sort_values(["style", "hook", "model", "layer", "position_mean"]).reset_index(drop=True)
    out.attrs["notes"] = [f"{style} prompts, {hook} ({model}): {n} of {total} pairs excluded: {EXCLUDED}"
                          for (model, style, hook), (total, n) in pairs.iterrows() if n]
    return out


def report(summary, pair_name: str) -> str:
    """Console summary: where each model's answer is carried."""
    lines = [f"Activation patching on minimal pairs, pair {pair_name!r} (restored fraction of the clean logit difference)"]
    for (style, hook), part in summary.groupby(["style", "hook"], sort=False):
        lines.append(f"\n[{style} prompts, {hook}]")
        for model, m in part.groupby("model", sort=False):
            best = m.loc[m["restored_mean"].idxmax()]
            last = m[m["is_last"]].sort_values("layer")
            moved = last[last["restored_mean"] >= 0.5]
            when = f"block {int(moved['layer'].iloc[0])}" if len(moved) else "no block"
            lines.append(f"  {model}: strongest cell block {int(best['layer'])} at {best['role']} "
                         f"({best['restored_mean']:.2f}, n={int(best['n'])}); the last position alone restores "
                         f">= half from {when}")
    lines += [f"note: {line}" for line in summary.attrs.get("notes", [])]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m studies.{STUDY}", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_options(parser)
    parser.add_argument("--hooks", default="resid_pre,attn_out,mlp_out",
                        help=f"comma-separated, from {', '.join(HOOKS)} (default: resid_pre,attn_out,mlp_out)")
    parser.add_argument("--styles", default="zero", help=f"comma-separated prompt styles, from {', '.join(STYLES)}")
    parser.add_argument("--facts", help="CSV/JSONL of facts (subject, answer[, split]); default: the toy world's capitals")
    parser.add_argument("--split", default="test", choices=("test", "train", "all"), help="which facts (default: test)")
    parser.add_argument("--limit", type=int, default=40, help="minimal pairs per style (default: 40)")
    parser.add_argument("--seed", type=int, default=0)
    add_run_options(parser)
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    add_model_options(parser)
    return parser.parse_args(argv)


def _choices(text: str, valid: Sequence[str], what: str) -> list[str]:
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    bad = [c for c in chosen if c not in valid]
    if bad or not chosen:
        raise StudyError(f"unknown {what} {', '.join(bad) or '(none given)'}; choose from {', '.join(valid)}")
    return list(dict.fromkeys(chosen))


def _facts(args) -> list[tuple[str, str]]:
    from studies.ffn_capitals.items import read_facts_file, toy_facts

    facts = read_facts_file(args.facts) if args.facts else toy_facts()
    chosen = [f for f in facts if args.split == "all" or f.split == args.split] or facts
    return [(f.subject, f.answer) for f in chosen]


def _tokenizer_and_layers(pair) -> tuple[object, dict[str, int]]:
    """The base member's tokenizer (minimal pairs are built from it; the pair shares it) and
    each member's number of blocks, from the tokenizer and config files alone."""
    import transformers

    import interp

    layers = {}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(pair.spec.source("base"))
        for member in interp.registry.MEMBERS:
            layers[member] = int(transformers.AutoConfig.from_pretrained(pair.spec.source(member)).num_hidden_layers)
    except (OSError, ValueError, AttributeError):
        for member in interp.registry.MEMBERS:  # the loader explains what is wrong with the model
            lm = pair.load(member)
            tokenizer = tokenizer if member != "base" else lm.tokenizer
            layers[member] = lm.n_layers
    return tokenizer, layers


def run_study(args) -> int:
    import torch

    import interp
    from studies._common import progress, run_dir, seed_everything
    from studies._identity import finish_run, open_run, report_shard, row_options, run_fingerprint, write_meta
    from studies._results import ResultsLog, read_results
    from studies._shards import load_members, parse_shard, pending_by_member, results_name

    started = time.perf_counter()
    hooks = _choices(args.hooks, HOOKS, "hook")
    styles = _choices(args.styles, list(STYLES), "style")
    if args.limit is not None and args.limit < 1:
        raise StudyError(f"--limit must be a positive number of pairs, got {args.limit}")
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    shard = parse_shard(args.shard)
    pair = interp.load_pair(args.pair, base=args.base, chat=args.chat, **load_kwargs(args))
    out = run_dir(STUDY, pair, args.out)
    timings: dict[str, float] = {}
    tokenizer, n_layers = _tokenizer_and_layers(pair)
    pairings = [pair_facts(tokenizer, _facts(args), style, args.limit, args.seed) for style in styles]
    pairs = [p for pairing in pairings for p in pairing.pairs]
    if not pairs:
        raise StudyError("no minimal pairs: no two facts have prompts of one token length with different "
                         "first answer tokens")
    options = {**row_options(args, ROW_OPTIONS), "hooks": hooks, "styles": styles}
    fingerprint = run_fingerprint(STUDY, pair, options, args.seed, pairs)
    open_run(out, STUDY, fingerprint, shard, overwrite=args.overwrite, summary_only=args.summary_only, outputs=TABLES)
    if not args.summary_only:
        log = ResultsLog(out / results_name(shard), KEY_FIELDS)
        chunks = [[p] for p in pairs]  # one minimal pair per chunk: a pair's sweep is a batch of its own

        def key_of(member):  # the last row of a pair: it is complete when that row was written
            return lambda p: (member, p.style, p.id, hooks[-1], n_layers[member] - 1, len(p.corrupted.ids) - 1)

        todo = pending_by_member(chunks, key_of, log, shard)
        for member, lm in load_members(pair, [m for m, left in todo.items() if left]):
            if lm.parallel and "resid_mid" in hooks:
                raise StudyError(f"the {member} model has parallel attention and FFN (no resid_mid); drop it from --hooks")
            t0 = time.perf_counter()
            for _, (minimal,) in progress(todo[member], desc=f"{STUDY} {member}", total=len(todo[member])):
                with torch.no_grad():
                    log.write(analyse_pair(lm, minimal, member, hooks))
            timings[f"{member}_s"] = round(time.perf_counter() - t0, 2)
        finish_run(out, shard, timings=timings, n_written=log.n_written)
        if not shard.is_whole:
            report_shard(out, shard, log, log.n_written)
            return 0
    rows = read_results(out, KEY_FIELDS)
    if not rows:
        raise StudyError(f"no results in {out} (results*.jsonl)")
    summary = summarize(rows)
    summary.to_csv(out / "summary.csv", index=False, float_format="%.6g")
    figures = []
    if not args.no_figures:
        from figures.patching_heatmap import plot_patching_heatmap

        t0 = time.perf_counter()
        for (style, hook), part in summary.groupby(["style", "hook"], sort=False):
            figures += plot_patching_heatmap(part, out / f"restored_{style}_{hook}",
                                             title=f"{pair.name}: {hook}, {style} prompts")
        timings["figures_s"] = round(time.perf_counter() - t0, 2)
    text = report(summary, pair.name)
    timings["total_s"] = round(time.perf_counter() - started, 2)
    extra = {"pair": asdict(pair.spec), "n_rows": len(rows), "key_fields": list(KEY_FIELDS),
             "minimal_pairs": [p.id for p in pairs], "load_options": load_kwargs(args),
             "models": {m: pair.spec.source(m) for m in interp.registry.MEMBERS}, "fingerprint": fingerprint,
             "outputs": [*TABLES, *(Path(f).name for f in figures)]}
    extra["unpaired_facts"] = {pg.style: pg.unpaired for pg in pairings}
    write_meta(out, study=STUDY, options=dict(vars(args)), seed=args.seed, timings=timings, **extra)
    print(text)
    for pairing in pairings:
        for line in pairing.notes():
            print(f"note: {line}")
    print(f"\nwrote {out}/ (results*.jsonl, summary.csv, meta.json{'' if args.no_figures else ', figures'}) "
          f"in {timings['total_s']:.1f} s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (2 on bad input / missing weights, no traceback)."""
    from studies._common import run_cli

    return run_cli(parse_args, run_study, argv)


if __name__ == "__main__":
    raise SystemExit(main())
