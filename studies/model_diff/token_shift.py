"""Model-diff part ``token_shift``: URIAL's token distribution shift along the chat model's answers
(:mod:`interp.diff.token_shift`).

A part of the study (``PART``, :class:`studies.model_diff.parts.Part`; ``--parts token_shift``).
Its ``run`` reads the prompt set (:func:`prompt_set`), and in blocks of ``--shift-block``
prompts loads the chat model (answers + its own log-probs), then the base model (ranks, KL),
one at a time, appending one row per prompt x mode x answer position to the study's
``results.jsonl`` (``part="token_shift"``, ``key`` = ``[mode, prompt_id, position]``; on resume a
block whose rows exist is skipped, any other recomputed whole). The one part that shards:
``--shard i/n`` runs the i-th of n contiguous parts of the blocks (``studies._shards``), so
``--shift-block`` sets how finely. From the rows alone it writes:

* ``token_shift.csv``: one row per prompt x mode x answer position: ``prompt_id``,
  ``prompt_kind``, ``mode``, ``position``, ``token_id``, ``token``, ``base_rank``,
  ``shift_class``, ``kl``, ``chat_logprob``, ``base_logprob``;
* ``token_shift_positions.csv``: fractions per class and mean KL by mode, kind and position
  (positions from ``--shift-max-position`` pooled) and over all positions (``position=all``);
* ``token_shift_tokens.csv``: the most shifted tokens per mode and kind;
* ``token_shift_positions.png/.pdf``: shift fractions by position, one panel per kind;
* ``summary.csv`` rows (group ``mode/kind``): ``n`` positions, ``frac_unshifted``,
  ``frac_marginal``, ``frac_shifted`` and ``mean_kl`` over all positions.

Prompts: for the toy pair (and by default) the toy world's chat-format prompts, ``plain``
(style ``chat``), ``benign`` (``chat_benign``) and ``harmful`` (``chat_harmful``), at most
``--shift-limit`` per kind (a seeded sample). ``--shift-prompts FILE`` reads a JSONL file
(``prompt``, optional ``id`` and ``kind``) or a text file (one prompt a line) instead; those
are wrapped in the chat model's chat template (``--shift-chat-template auto``: when the
tokenizer has one and the prompts are from a file). Both models read the same token ids.
"""

from __future__ import annotations

import gc
import json
import random
from pathlib import Path

from studies._common import StudyError
from studies.model_diff.parts import Part

NAME = "token_shift"
TOY_STYLES = {"plain": "chat", "benign": "chat_benign", "harmful": "chat_harmful"}
# shift_max_position shapes the tables only, but they are rebuilt from the rows alone, so the rows carry it
ROW_OPTIONS = ("shift_prompts", "shift_limit", "shift_max_new_tokens", "shift_modes", "shift_temperature",
               "shift_chat_template", "shift_max_position")
OUTPUTS = ("token_shift.csv", "token_shift_positions.csv", "token_shift_tokens.csv")


def add_arguments(parser) -> None:
    group = parser.add_argument_group("token shift (URIAL)")
    group.add_argument("--shift-prompts", help="JSONL (prompt, id, kind) or .txt (one prompt a line); default: "
                                               "the toy world's plain/benign/harmful chat prompts")
    group.add_argument("--shift-limit", type=int, default=100, help="prompts per kind at most (default 100; 0: all)")
    group.add_argument("--shift-max-new-tokens", type=int, default=24, help="answer length cap (default 24)")
    group.add_argument("--shift-modes", default="greedy,sample", help="greedy, sample or both (default both)")
    group.add_argument("--shift-temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    group.add_argument("--shift-chat-template", choices=("auto", "on", "off"), default="auto",
                       help="wrap file prompts in the chat template (auto: on for --shift-prompts files)")
    group.add_argument("--shift-block", type=int, default=512,
                       help="prompts per block: each block loads chat then base; the chat log-probs of a block "
                            "stay in memory (positions x vocab x 4 bytes)")
    group.add_argument("--shift-max-position", type=int, default=16,
                       help="positions from this one on are pooled in token_shift_positions.csv (default 16)")


def _modes(args) -> tuple[str, ...]:
    from interp.diff.token_shift import MODES

    modes = tuple(m.strip() for m in str(args.shift_modes).split(",") if m.strip())
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise StudyError(f"--shift-modes {args.shift_modes!r}: choose from {', '.join(MODES)} (comma-separated)")
    return modes


def _read_file(path: Path) -> list[dict]:
    if not path.is_file():
        raise StudyError(f"--shift-prompts: no file at {str(path)!r}")
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if path.suffix == ".jsonl":
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise StudyError(f"--shift-prompts {path}: line {number} is not JSON ({err.msg})") from None
            if not isinstance(record, dict) or not str(record.get("prompt", "")).strip():
                raise StudyError(f"--shift-prompts {path}: line {number} has no non-empty 'prompt' field")
            out.append({"id": str(record.get("id", number)), "kind": str(record.get("kind", "all")),
                        "prompt": str(record["prompt"])})
        else:
            out.append({"id": str(number), "kind": "all", "prompt": line})
    if not out:
        raise StudyError(f"--shift-prompts {path}: the file holds no prompts")
    ids = [p["id"] for p in out]
    if len(set(ids)) != len(ids):
        raise StudyError(f"--shift-prompts {path}: prompt ids repeat (e.g. {next(i for i in ids if ids.count(i) > 1)!r})")
    return out


def prompt_set(args) -> list[dict]:
    """``[{"id", "kind", "prompt"}]``: the file's prompts, or the toy world's (see the module docstring)."""
    limit = int(getattr(args, "shift_limit", 100) or 0)
    if limit < 0:
        raise StudyError(f"--shift-limit must be >= 0 (0: all), got {limit}")
    if getattr(args, "shift_prompts", None):
        records = _read_file(Path(args.shift_prompts).expanduser())
        kinds = sorted({r["kind"] for r in records})
        rng = random.Random(getattr(args, "seed", 0) or 0)
        out = []
        for kind in kinds:
            group = [r for r in records if r["kind"] == kind]
            out += group if not limit or len(group) <= limit else rng.sample(group, limit)
        return out
    from tasks.toy_world.prompts import prompts

    out = []
    for kind, style in TOY_STYLES.items():
        records = prompts(style, "all")
        rng = random.Random(f"{getattr(args, 'seed', 0) or 0}:{style}")
        if limit and len(records) > limit:
            records = rng.sample(records, limit)
        out += [{"id": f"{style}/{r['subject']}" + (f"/{r['verb']}" if r["verb"] else ""), "kind": kind,
                 "prompt": r["prompt"]} for r in records]
    return out


def _render(chat, prompts: list[dict], args) -> list[str]:
    from probes.chat import chat_prompt, has_chat_template

    choice = getattr(args, "shift_chat_template", "auto")
    wrap = choice == "on" or (choice == "auto" and bool(getattr(args, "shift_prompts", None))
                              and has_chat_template(chat.tokenizer))
    return [chat_prompt(chat.tokenizer, p["prompt"]) if wrap else p["prompt"] for p in prompts]


def _free(lm) -> None:
    del lm
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover
        pass


def _key(mode: str, prompt_id: str, position: int) -> str:
    return json.dumps([mode, prompt_id, int(position)])


def run(ctx) -> None:
    """Append the rows of the prompts not yet done (see the module docstring)."""
    import time

    from interp.diff.token_shift import chat_responses, score_shift
    from studies._common import progress
    from studies._shards import Shard, chunked

    args, pair = ctx.args, ctx.pair
    modes = _modes(args)
    for name in ("shift_max_new_tokens", "shift_block", "shift_max_position"):
        if int(getattr(args, name)) < 1:
            raise StudyError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    # fixed blocks of the whole prompt list: a block not done is recomputed whole, so every row comes
    # from the block it has in an uninterrupted, unsharded run (studies._shards); a shard takes its blocks
    blocks = chunked(prompt_set(args), int(args.shift_block))
    shard = ctx.shard or Shard()
    start, stop = shard.bounds(len(blocks))
    if not shard.is_whole:
        print(f"{shard.label}: token shift blocks {start + 1}-{stop} of {len(blocks)} (--shift-block "
              f"{args.shift_block} prompts each)" if stop > start else
              f"{shard.label}: no token shift block ({len(blocks)} blocks of --shift-block {args.shift_block} "
              "prompts for all shards; a smaller --shift-block gives more)")
    # a block's rows are written in one batch, so each prompt's position 0 stands for its rows
    todo = [b for b in blocks[start:stop]
            if not all(ctx.log.done((NAME, _key(m, p["id"], 0))) for p in b for m in modes)]
    batch_size = int(getattr(args, "batch_size", None) or 8)
    t0 = time.perf_counter()
    for block in progress(todo, desc="token shift blocks"):
        chat = pair.load("chat")
        responses = chat_responses(chat, _render(chat, block, args), [p["id"] for p in block],
                                   [p["kind"] for p in block], max_new_tokens=int(args.shift_max_new_tokens),
                                   modes=modes, temperature=float(args.shift_temperature),
                                   seed=int(getattr(args, "seed", 0) or 0), batch_size=batch_size)
        _free(chat)
        base = pair.load("base")
        rows = score_shift(base, responses, batch_size=batch_size)  # refuses another tokenizer
        _free(base)
        # max_position (a row option, so equal in every row) is carried for the tables, which see rows only
        ctx.log.write([{"part": NAME, "key": _key(r["mode"], r["prompt_id"], r["position"]), **r,
                        "max_position": int(args.shift_max_position)} for r in rows])
    ctx.timings[f"{NAME}_s"] = round(time.perf_counter() - t0, 2)


def work(args) -> dict:
    """The prompt set, for the run's fingerprint: ids and kinds, and a hash of the texts."""
    import hashlib

    prompts = prompt_set(args)
    digest = hashlib.sha256("\n\0".join(p["prompt"] for p in prompts).encode("utf-8")).hexdigest()
    return {"prompts": [[p["id"], p["kind"]] for p in prompts], "sha256": digest}


COLUMNS = ["prompt_id", "prompt_kind", "mode", "position", "token_id", "token", "base_rank", "shift_class", "kl",
           "chat_logprob", "base_logprob"]


def _rows(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in ("part", "key", "max_position")} for r in rows]


def _max_position(rows: list[dict]) -> int:
    return int(rows[0]["max_position"]) if rows else 16


def tables(rows: list[dict], out: Path) -> list[Path]:
    """The three tables, from the rows alone."""
    import pandas as pd

    from interp.diff.token_shift import SHIFT_CLASSES, fractions_by_position, most_shifted_tokens

    max_position, rows, out = _max_position(rows), _rows(rows), Path(out)
    table = pd.DataFrame(rows, columns=COLUMNS).sort_values(["mode", "prompt_kind", "prompt_id", "position"])
    table.to_csv(out / "token_shift.csv", index=False, float_format="%.6g")
    fractions = pd.DataFrame(fractions_by_position(rows, max_position=max_position),
                             columns=["mode", "prompt_kind", "position", "n", *SHIFT_CLASSES, "mean_kl"])
    fractions.to_csv(out / "token_shift_positions.csv", index=False, float_format="%.6g")
    pd.DataFrame(most_shifted_tokens(rows), columns=["mode", "prompt_kind", "token", "n", "n_shifted", "frac_shifted",
                                                    "mean_kl"]).to_csv(out / "token_shift_tokens.csv", index=False,
                                                                       float_format="%.6g")
    return [out / name for name in OUTPUTS]


def figures(rows: list[dict], out: Path) -> list[Path]:
    """Shift fractions by answer position, one panel per mode and kind."""
    import pandas as pd

    from interp.diff.token_shift import SHIFT_CLASSES, fractions_by_position

    max_position = _max_position(rows)
    fractions = pd.DataFrame(fractions_by_position(_rows(rows), max_position=max_position),
                             columns=["mode", "prompt_kind", "position", "n", *SHIFT_CLASSES, "mean_kl"])
    by_pos = fractions[fractions["position"] != "all"]
    if by_pos.empty:
        return []
    from figures.by_layer import plot_by_layer

    long = by_pos.melt(id_vars=["mode", "prompt_kind", "position"], value_vars=list(SHIFT_CLASSES),
                       var_name="class", value_name="fraction").assign(
        position=lambda d: d["position"].astype(int), facet=lambda d: d["mode"] + " / " + d["prompt_kind"])
    return list(plot_by_layer(long, Path(out) / "token_shift_positions", value_col="fraction", layer_col="position",
                              model_col="class", facet_col="facet", ylabel="fraction of positions",
                              title=f"token shift by answer position (positions >= {max_position} pooled)"))


def summary(rows: list[dict]) -> list[dict]:
    """Over all answer positions, per mode and kind (``group`` = ``mode/kind``): the fraction of
    positions in each class, the mean KL and the number of positions."""
    from interp.diff.token_shift import SHIFT_CLASSES, fractions_by_position

    out = []
    for r in fractions_by_position(_rows(rows)):
        if r["position"] != "all":
            continue
        group = f"{r['mode']}/{r['prompt_kind']}"
        for metric in ("n", *(f"frac_{c}" for c in SHIFT_CLASSES), "mean_kl"):
            value = r[metric.removeprefix("frac_")]
            out.append({"part": NAME, "group": group, "layer": None, "metric": metric,
                        "value": int(value) if metric == "n" else float(value)})
    return out


PART = Part(NAME, add_arguments, ROW_OPTIONS, run, tables, summary, figures, work, outputs=OUTPUTS, shards=True)
