"""What every study's CLI shares: the entry point, the model and run-folder options, where a
run writes, progress bars and seeding.

A study writes into one folder, ``runs/<study>/<pair>/`` by default (:func:`run_dir`): its
resumable ``results*.jsonl`` (:mod:`studies._results`), ``fingerprint*.json`` and ``meta.json``
saying how the rows were made (:mod:`studies._identity`), and the summary and figures, computed
from the rows alone. ``--shard i/n`` runs one part of the work list (:mod:`studies._shards`).

Usage sketch::

    from studies._common import progress, run_dir
    from studies._identity import open_run, row_options, run_fingerprint
    from studies._results import ResultsLog, read_results
    from studies._shards import chunked, load_members, pending, results_name, shard_plan

    out = run_dir("my_study", pair, args.out)
    chunks = chunked(work, args.batch_size)
    open_run(out, "my_study", run_fingerprint("my_study", pair, row_options(args, ROW_OPTIONS), args.seed, work),
             shard, overwrite=args.overwrite, summary_only=args.summary_only)
    log = ResultsLog(out / results_name(shard), key_fields=("model", "item"))
    plan = shard_plan(len(chunks), shard)
    for member, lm in load_members(pair, [m for m in plan if plan[m]]):
        for index, chunk in progress(pending(chunks, key_of(member), log, plan[member]), desc=member):
            log.write([compute(lm, row) for row in chunk])      # appended + flushed
    rows = read_results(out, key_fields=("model", "item"))
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from interp.errors import InterpError


class StudyError(InterpError):
    """Bad input to a study (options, task files): the CLI prints it and exits with status 2."""


# -- entry point and options ---------------------------------------------------------------------
def run_cli(parse: Callable[[Sequence[str] | None], object], study: Callable[[object], int],
            argv: Sequence[str] | None = None) -> int:
    """A study's entry point: parse ``argv``, run, and turn bad input (unknown pair or task,
    missing data or weights: ``interp.InterpError`` or ``StudyError``) into a one-line
    ``error: ...`` on stderr and exit status 2 instead of a traceback."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = parse(argv)
    from interp import InterpError

    try:
        return study(args)
    except (InterpError, StudyError) as err:  # InterpError covers interp.LoadError
        print(f"error: {err}", file=sys.stderr)
        return 2


def add_pair_options(parser) -> None:
    """``--pair`` (a registry pair, default ``toy``) or ``--base PATH --chat PATH`` (a custom pair)."""
    parser.add_argument("--pair", default="toy", help="registry pair (interp.registry.PAIRS); default toy")
    parser.add_argument("--base", help="path or hub id of a base model (with --chat: a custom pair)")
    parser.add_argument("--chat", help="path or hub id of its RL-tuned counterpart")


def add_model_options(parser) -> None:
    """The model-loading options every study takes (passed on to ``interp.load``)."""
    parser.add_argument("--dtype", help="float32, bfloat16, float16, auto")
    parser.add_argument("--device", help="e.g. cpu, cuda")
    parser.add_argument("--device-map", help="accelerate device_map: auto (balanced, sequential), one device, or "
                                             "module=device pairs, e.g. 'model.layers.0-15=0,model.layers.16-31=disk,*=cpu' "
                                             "(* = every module not named; see interp.devices)")
    parser.add_argument("--offload-folder", help="where --device-map puts the weights of modules mapped to disk")
    parser.add_argument("--capture-device", help="where captures and logits are gathered (default: the embedding's device)")
    parser.add_argument("--quantization", choices=("4bit", "8bit"), help="bitsandbytes (CUDA only)")
    parser.add_argument("--backend", choices=("torch", "nnsight"), default="torch",
                        help="run forwards with PyTorch hooks (default) or as nnsight traces")
    parser.add_argument("--remote", nargs="?", const=True, default=False, type=_remote,
                        help="with --backend nnsight: run on NDIF (needs NDIF_API_KEY); "
                             "--remote local: a dry run of that path on the local weights")


# Options every study takes that the fingerprint records with the pair (``studies._identity``,
# ``backend_of``), so a study declares them in neither ROW_OPTIONS nor OTHER_OPTIONS.
PAIR_OPTIONS = ("backend", "remote")


def _remote(text: str):
    import argparse

    if text != "local":
        raise argparse.ArgumentTypeError(f"--remote takes no value, or 'local' for a dry run; got {text!r}")
    return text


# Options of add_model_options that say where a model runs but not what it computes (the rows
# equal the single-device run's: tests/test_devices.py), so no fingerprint holds them.
PLACEMENT_OPTIONS = ("offload_folder", "capture_device")


def load_kwargs(args) -> dict:
    """``interp.load`` keyword arguments from the options of :func:`add_model_options`
    (``--device-map`` text parsed by ``interp.devices.parse_device_map``; the backend only when
    it is not the default torch one)."""
    from interp.devices import parse_device_map

    backend = getattr(args, "backend", "torch")
    pairs = (("dtype", args.dtype), ("device", args.device), ("device_map", parse_device_map(args.device_map)),
             ("offload_folder", getattr(args, "offload_folder", None)),
             ("capture_device", getattr(args, "capture_device", None)), ("quantization", args.quantization),
             ("backend", None if backend == "torch" else backend), ("remote", getattr(args, "remote", False)))
    return {k: v for k, v in pairs if v}


def comma_list(text: str) -> tuple[str, ...]:
    """An argparse ``type``: ``"a, b,a"`` -> ``("a", "b")`` (stripped, duplicates dropped, order kept)."""
    import argparse

    parts = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not parts:
        raise argparse.ArgumentTypeError("give at least one value")
    return parts


def add_run_options(parser) -> None:
    """The run-folder options every study takes: ``--out``, ``--overwrite``, ``--shard``, ``--summary-only``."""
    parser.add_argument("--out", help="output folder (default runs/<study>/<pair>/; for --base/--chat "
                                      "runs/<study>/custom-<base>-vs-<chat>-<hash>/)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete this study's previous files in the folder (every shard's) first, to start "
                             "afresh with other options or models")
    parser.add_argument("--shard", help="i/n: run the i-th of n near-equal parts of the work "
                                        "(results.shard-i-of-n.jsonl; no summary, see --summary-only)")
    parser.add_argument("--summary-only", action="store_true",
                        help="rebuild the summary and figures from the folder's results*.jsonl (merged shards), "
                             "given the options of the run")


# -- folders and names ---------------------------------------------------------------------------
def _slug(source: str) -> str:
    name = Path(str(source).rstrip("/\\")).name or "model"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:40]


def _where(source: str) -> str:
    """A local folder's absolute path, or the hub id as given."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() or source.startswith((".", "/", "~")) else source


def pair_folder_name(pair) -> str:
    """``pair.name`` for a registry pair; for a custom (``--base/--chat``) pair a name from both
    models and a hash of where they are: ``custom-<base>-vs-<chat>-<hash8>``."""
    spec = pair.spec
    if spec.name != "custom":
        return spec.name
    from interp.identity import digest

    base, chat = spec.source("base"), spec.source("chat")
    return f"custom-{_slug(base)}-vs-{_slug(chat)}-{digest([_where(base), _where(chat)])[:8]}"


def run_dir(study: str, pair, out: str | os.PathLike[str] | None = None) -> Path:
    """``out`` if given, else ``runs/<study>/<pair folder name>/`` (:func:`pair_folder_name`;
    ``pair`` may also be a plain name), relative to the working directory; created."""
    name = pair if isinstance(pair, str) else pair_folder_name(pair)
    path = Path(out) if out else Path("runs") / study / name
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- progress and seeding ------------------------------------------------------------------------
def progress(iterable: Iterable, desc: str = "", total: int | None = None, disable: bool | None = None) -> Iterator:
    """A tqdm progress bar on stderr (off when ``disable``, or when stderr is not a terminal
    and ``disable`` is ``None``)."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = not sys.stderr.isatty()
    return iter(tqdm(iterable, desc=desc, total=total, disable=disable, leave=False, dynamic_ncols=True))


def seed_everything(seed: int) -> None:
    """Seed Python, numpy (if installed) and torch."""
    import torch

    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy comes with torch/pandas
        pass

