"""The ``--lens`` option of the studies that early-decode layers: which lens reads the blocks.

``--lens logit`` (default): the model's own final norm and unembedding. ``--lens tuned``: the
tuned lens shipped for the pair (:data:`SHIPPED`; the toy pair's in
``models/toy/tuned_lens/{base,chat}``). ``--lens PATH``: a folder holding one saved tuned lens
per member, ``PATH/base/`` and ``PATH/chat/`` (each ``config.json`` + ``translators.safetensors``,
as ``interp.lens.TunedLens.save`` writes them; ``python -m toy_pair.tuned_lens --out PATH``
writes that layout for the toy pair). Each member's lens must belong to that member:
``TunedLens.load`` refuses a lens trained on another final norm / unembedding.

What a run records: every row with layers carries :meth:`LensChoice.row_fields` (``lens``,
and for a tuned lens ``lens_sha256``, the hash of the files it decoded through,
``interp.lens.tuned.lens_sha256``); the run fingerprint's ``lens`` option is
:attr:`LensChoice.fingerprint` (the kind and each member's lens hash, not the path: the same
files elsewhere give the same rows), so resuming with another lens is refused; tables take a
``lens`` and ``lens_sha256`` columns (:func:`lens_by_model`) and figures name the lens
(:func:`lens_label`), both from the rows alone.

Usage in a study::

    add_lens_option(parser)                      # --lens
    lens = resolve_lens_option(args.lens, pair)  # before the fingerprint: bad values fail fast
    options = {**row_options(args, ROW_OPTIONS), "lens": lens.fingerprint}   # "lens" in ROW_OPTIONS
    for member, lm in load_members(...):
        decoder = lens.load(member, lm)          # None for the logit lens (probes' default)
        row = {..., **lens.row_fields(member)}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from studies._common import StudyError
from studies._shards import MEMBERS

KINDS = ("logit", "tuned")
# Pairs with tuned lenses shipped with this package: folder (relative to interp.registry.PACKAGE_ROOT)
# holding {base,chat}/.
SHIPPED = {"toy": "models/toy/tuned_lens"}
TRAIN_HINT = ("train one per member with interp.lens.train_tuned_lens(lm, texts).save('FOLDER/base') and "
              "'FOLDER/chat' (for the toy pair: python -m toy_pair.tuned_lens --out FOLDER), then pass --lens FOLDER")


@dataclass(frozen=True)
class LensChoice:
    """The lens of a run: ``kind`` ``"logit"`` or ``"tuned"``; for a tuned lens each member's
    folder and file hash."""

    kind: str = "logit"
    folders: dict[str, Path] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        """``"logit"``, or ``"tuned (base #<12 hex>, chat #<12 hex>)"``: what decides the rows."""
        if self.kind == "logit":
            return "logit"
        return f"tuned ({', '.join(f'{m} #{self.sha256[m][:12]}' for m in MEMBERS)})"

    def row_fields(self, member: str) -> dict:
        """``{"lens": kind}``, plus ``lens_sha256`` for a tuned lens."""
        return {"lens": self.kind} if self.kind == "logit" else {"lens": self.kind, "lens_sha256": self.sha256[member]}

    def load(self, member: str, lm):
        """The lens to pass as ``lens=`` to readouts for ``member``'s model ``lm``: ``None`` (the
        logit lens) or its :class:`interp.lens.TunedLens` (an error if it is not ``lm``'s)."""
        if self.kind == "logit":
            return None
        from interp.lens import TunedLens

        lens = TunedLens.load(self.folders[member], lm)
        if lens.sha256 != self.sha256[member]:
            raise StudyError(f"the tuned lens at {self.folders[member]} changed while the run started; rerun")
        return lens


def add_lens_option(parser) -> None:
    """``--lens logit|tuned|PATH`` (default logit)."""
    parser.add_argument("--lens", default="logit", metavar="logit|tuned|PATH",
                        help="how blocks are early-decoded: logit (default: final norm + unembedding), tuned (the "
                             "pair's shipped tuned lens; toy: models/toy/tuned_lens), or PATH, a folder with a "
                             "saved tuned lens per member in PATH/base and PATH/chat (interp.lens.TunedLens.save)")


def _folder_lens(root: Path, source: str) -> LensChoice:
    from interp.lens.tuned import CONFIG, WEIGHTS, lens_sha256

    folders = {m: root / m for m in MEMBERS}
    missing = [m for m, f in folders.items() if not ((f / CONFIG).is_file() and (f / WEIGHTS).is_file())]
    if missing:
        raise StudyError(f"--lens {source}: no tuned lens for {' and '.join(missing)} in {root} (a lens folder holds "
                         f"base/ and chat/, each with {CONFIG} and {WEIGHTS}); {TRAIN_HINT}")
    return LensChoice("tuned", folders, {m: lens_sha256(f) for m, f in folders.items()})


def resolve_lens_option(value: str | None, pair) -> LensChoice:
    """``--lens`` -> the run's :class:`LensChoice` (``pair``: an ``interp.Pair`` or its
    ``PairSpec``), checked before any model loads; StudyError naming the valid choices."""
    from interp.registry import PACKAGE_ROOT

    value = "logit" if value is None else str(value)
    if value == "logit":
        return LensChoice()
    spec = getattr(pair, "spec", pair)
    if value == "tuned":
        if spec.name not in SHIPPED:
            raise StudyError(f"--lens tuned: pair {spec.name!r} has no shipped tuned lens (pairs with one: "
                             f"{', '.join(SHIPPED)}); {TRAIN_HINT}")
        return _folder_lens(PACKAGE_ROOT / SHIPPED[spec.name], value)
    if Path(value).expanduser().is_dir():
        return _folder_lens(Path(value).expanduser().resolve(), value)
    raise StudyError(f"unknown --lens {value!r}: choose from {', '.join(KINDS)}, or a folder holding a tuned lens "
                     "per member (PATH/base, PATH/chat)")


def lens_by_model(rows: list[dict]) -> dict[str, dict]:
    """model -> ``{"lens": kind, "lens_sha256": hash or None}`` of a run's rows with layers
    (``"logit"`` for rows written before lenses were recorded): the ``lens`` columns of a
    summary. A StudyError if one model's rows mix lenses (rows copied together from runs with
    different ``--lens``)."""
    seen: dict[str, set] = {}
    for r in rows:
        if "layers" in r:  # skipped items decoded nothing
            seen.setdefault(r["model"], set()).add((r.get("lens", "logit"), r.get("lens_sha256")))
    mixed = {m: s for m, s in seen.items() if len(s) > 1}
    if mixed:
        model, lenses = next(iter(mixed.items()))
        names = ", ".join(sorted(k if h is None else f"{k} #{h[:12]}" for k, h in lenses))
        raise StudyError(f"the {model} rows mix lenses ({names}): they come from runs with different --lens; "
                         "rerun into a fresh --out folder")
    return {m: dict(zip(("lens", "lens_sha256"), next(iter(s)))) for m, s in seen.items()}


def add_lens_columns(table, rows: list[dict], after: str = "layer"):
    """``table`` (a DataFrame with a ``model`` column) with ``lens`` and ``lens_sha256``
    columns from :func:`lens_by_model`, placed after column ``after``."""
    lenses, attrs = lens_by_model(rows), dict(table.attrs)  # attrs: the summary's notes
    table = table.copy()
    at = list(table.columns).index(after) + 1 if after in table.columns else len(table.columns)
    for offset, col in enumerate(("lens", "lens_sha256")):
        table.insert(at + offset, col, [lenses.get(m, {"lens": "logit", "lens_sha256": None})[col]
                                        for m in table["model"]])
    table.attrs = attrs
    return table


def lens_label(kinds) -> str:
    """For figure labels: ``"logit lens"``, ``"tuned lens"`` (``"logit / tuned lens"`` if the
    models' differ), from a summary's ``lens`` column."""
    kinds = sorted({str(k) for k in kinds if isinstance(k, str)}) or ["logit"]
    return " / ".join(kinds) + " lens"
