"""Activation harvesting: residual activations of chosen layers over a token stream, for one
model or for both members of a pair, aligned token for token.

    acts = harvest_pair(interp.load_pair("toy"), texts, layers=[0, 2, 4], out=Path("runs/acts"))
    acts.base(2), acts.chat(2)                  # [n_tokens, d_model] each, row i = the same token
    for batch in acts.batches(512, shuffle=True, seed=0):
        batch["base"], batch["chat"]            # [512, layer, d_model]; batch["tokens"], ["index"] [512]

**The token stream.** Each text is tokenized by the model's own tokenizer (with its special
tokens: a Llama tokenizer opens each text with BOS) and the texts are concatenated. The stream
is cut into windows of ``seq_len`` tokens that all start with BOS (a window that does not begin
at a text's own BOS gets one prepended, so every window reads like a document's start). Windows
run ``batch_size`` at a time; only the last window may be shorter (left-padded in its batch).

**Kept positions.** Every real token except BOS tokens (each window's first token and each
text's opening BOS): BOS residuals are attention sinks whose norm is orders of magnitude above
the others', and padding columns are not tokens at all. A tokenizer without a BOS token keeps
every real position. ``tokens`` are the kept tokens' ids, ``where`` their ``(window, position
in window)``, so a context can be rebuilt (:meth:`Activations.context`).

**Pairs.** The two models run one after the other (a ``Pair`` loads one member at a time, never
both), each tokenizing the texts itself; the second member's windows must equal the first's,
else a ``DictionaryError`` says where they differ (a pair must share a tokenizer).

**Disk or memory.** With ``out=None`` everything stays in memory (nothing is written). With a
folder, each member's activations are written in shards (``{member}/shard_00000.safetensors``
holding ``acts`` ``[n, layer, d_model]`` in the chosen dtype, ``tokens`` and ``where``), each
shard written to a temporary name and renamed, so a shard on disk is complete. ``config.json``
records what decides the numbers (models' identities, a hash of the texts, layers, hook,
seq_len, batch_size, shard size, dtype); a rerun with the same config skips finished shards (and
a member whose shards are all done is not even loaded), a rerun with another config is refused.
Both modes hold the same shards, so their ``batches`` are identical.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm.auto import tqdm

from interp.dictionaries.errors import DictionaryError
from interp.identity import digest, model_identity
from interp.loading import Pair, load_pair
from interp.model import LM
from interp.registry import MEMBERS

FORMAT = 1
HOOKS = ("resid_post", "resid_pre")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SHARD_WINDOWS = 64  # windows per shard: 8 batches of 8 x 128 tokens, ~25 MB for the toy pair's 6 layers


# -- the token stream ---------------------------------------------------------------------------
def token_windows(lm: LM, texts: Sequence[Any], seq_len: int) -> list[Int[Tensor, " seq"]]:
    """The corpus as model inputs: windows of ``seq_len`` tokens, each starting with BOS (see
    the module doc). ``texts`` are strings, or token-id sequences for a model without a tokenizer."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise DictionaryError(f"texts must be a list of strings, got {type(texts).__name__}")
    if len(texts) == 0:
        raise DictionaryError("the corpus is empty: pass at least one non-empty text")
    bos = bos_id(lm)
    stream: list[int] = []
    for i, text in enumerate(texts):
        if isinstance(text, str):
            if lm.tokenizer is None:
                raise DictionaryError(f"{lm.name!r} has no tokenizer: pass token-id sequences, not strings")
            stream += lm.tokenizer(text)["input_ids"]
        else:
            stream += [int(t) for t in text]
    if not any(t != bos for t in stream):
        raise DictionaryError("the corpus has no tokens to keep (every text is empty)")
    windows, at = [], 0
    while at < len(stream):
        if bos is None or stream[at] == bos:  # a text's own BOS opens this window
            chunk = stream[at:at + seq_len]
            window = chunk
        else:
            chunk = stream[at:at + seq_len - 1]
            window = [bos] + chunk
        at += len(chunk)
        windows.append(torch.tensor(window, dtype=torch.long))
    return [w for w in windows if bos is None or bool((w != bos).any())]


def bos_id(lm: LM) -> int | None:
    tok = lm.tokenizer
    return None if tok is None or tok.bos_token_id is None else int(tok.bos_token_id)


def _kept(ids: Int[Tensor, "batch seq"], mask: Int[Tensor, "batch seq"], bos: int | None) -> Tensor:
    keep = mask.bool()
    return keep if bos is None else keep & (ids != bos)


# -- one model's activations ----------------------------------------------------------------------
@dataclass
class _Shard:
    """One shard: in memory (``acts`` etc. set) or on disk (``path``)."""

    n: int
    tokens: Int[Tensor, " n"]
    where: Int[Tensor, "n 2"]
    acts: Float[Tensor, "n layer d_model"] | None = None
    path: Path | None = None

    def load(self) -> Float[Tensor, "n layer d_model"]:
        if self.acts is not None:
            return self.acts
        with safe_open(str(self.path), "pt") as f:
            return f.get_tensor("acts")


class Activations:
    """One model's harvested activations: ``n_tokens`` kept tokens x ``layers``.

    Attributes:
        layers: the harvested block indices, in the order of the ``layer`` axis.
        hook: ``"resid_post"`` or ``"resid_pre"``.
        d_model: residual width; ``dtype``: storage dtype.
    """

    def __init__(self, shards: list[_Shard], layers: Sequence[int], hook: str, d_model: int, dtype: torch.dtype):
        self._shards = shards
        self.layers = tuple(layers)
        self.hook = hook
        self.d_model = d_model
        self.dtype = dtype

    def __repr__(self) -> str:
        where = "disk" if self._shards and self._shards[0].path is not None else "memory"
        return (f"Activations({self.n_tokens} tokens, layers={list(self.layers)}, hook={self.hook!r}, "
                f"d_model={self.d_model}, {str(self.dtype).removeprefix('torch.')}, {len(self._shards)} shards in {where})")

    @property
    def n_tokens(self) -> int:
        return sum(s.n for s in self._shards)

    @property
    def n_shards(self) -> int:
        return len(self._shards)

    @cached_property  # shards never change once harvested
    def tokens(self) -> Int[Tensor, " n"]:
        """The kept tokens' ids, in stream order."""
        return torch.cat([s.tokens for s in self._shards])

    @cached_property
    def where(self) -> Int[Tensor, "n 2"]:
        """Each kept token's ``(window, position in window)``."""
        return torch.cat([s.where for s in self._shards])

    def index(self, layer: int) -> int:
        """Position of block ``layer`` on the ``layer`` axis."""
        if layer not in self.layers:
            raise DictionaryError(f"layer {layer} was not harvested; harvested layers: {list(self.layers)}")
        return self.layers.index(layer)

    def layer(self, layer: int) -> Float[Tensor, "n d_model"]:
        """Block ``layer``'s activations at every kept token."""
        i = self.index(layer)
        return torch.cat([s.load()[:, i] for s in self._shards])

    def stack(self) -> Float[Tensor, "n layer d_model"]:
        """Every harvested layer: ``stack()[:, j] == layer(layers[j])``."""
        return torch.cat([s.load() for s in self._shards])

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False) -> Iterator[dict[str, Tensor]]:
        """Batches ``{"acts": [b, layer, d_model], "tokens": [b], "index": [b]}``; see :func:`iter_batches`."""
        for batch in iter_batches({"acts": self}, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last):
            yield batch

    def context(self, i: int, before: int = 16) -> Int[Tensor, " m"]:
        """Kept token ``i`` and up to ``before`` kept tokens before it in its window (BOS excluded)."""
        where = self.where
        window, pos = where[i].tolist()
        lo = max(0, i - before)
        same = (where[lo:i + 1, 0] == window) & (where[lo:i + 1, 1] <= pos)
        return self.tokens[lo:i + 1][same]


class PairActivations:
    """Both members' activations at the same tokens: row ``i`` of ``base(l)`` and ``chat(l)`` is
    the same token of the same window (checked when built)."""

    def __init__(self, members: dict[str, Activations]):
        base, chat = members["base"], members["chat"]
        if base.layers != chat.layers or base.n_shards != chat.n_shards:
            raise DictionaryError(f"base and chat were harvested differently (layers {list(base.layers)} vs "
                                  f"{list(chat.layers)}, {base.n_shards} vs {chat.n_shards} shards)")
        for k, (a, b) in enumerate(zip(base._shards, chat._shards)):
            if a.n != b.n or not torch.equal(a.tokens, b.tokens) or not torch.equal(a.where, b.where):
                raise DictionaryError(f"base and chat activations are not aligned in shard {k}: their tokens differ "
                                      "(a pair must share a tokenizer; harvest both on the same texts)")
        self.members = members

    def __repr__(self) -> str:
        return f"PairActivations(base={self.members['base']!r}, chat={self.members['chat']!r})"

    @property
    def layers(self) -> tuple[int, ...]:
        return self.members["base"].layers

    @property
    def n_tokens(self) -> int:
        return self.members["base"].n_tokens

    @property
    def tokens(self) -> Int[Tensor, " n"]:
        return self.members["base"].tokens

    @property
    def where(self) -> Int[Tensor, "n 2"]:
        return self.members["base"].where

    def member(self, name: str) -> Activations:
        if name not in MEMBERS:
            raise DictionaryError(f"unknown member {name!r}; valid: {', '.join(MEMBERS)}")
        return self.members[name]

    def base(self, layer: int) -> Float[Tensor, "n d_model"]:
        return self.members["base"].layer(layer)

    def chat(self, layer: int) -> Float[Tensor, "n d_model"]:
        return self.members["chat"].layer(layer)

    def context(self, i: int, before: int = 16) -> Int[Tensor, " m"]:
        return self.members["base"].context(i, before)

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int = 0,
                drop_last: bool = False) -> Iterator[dict[str, Tensor]]:
        """Batches ``{"base": [b, layer, d], "chat": [b, layer, d], "tokens": [b], "index": [b]}``, the same
        tokens in both; see :func:`iter_batches`."""
        yield from iter_batches(self.members, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)


def iter_batches(members: dict[str, Activations], batch_size: int, *, shuffle: bool, seed: int,
                 drop_last: bool = False) -> Iterator[dict[str, Tensor]]:
    """Batches over aligned members' shards, one shard in memory at a time (plus a remainder).

    Each batch also holds ``tokens`` (ids) and ``index`` (each row's position in the stream,
    i.e. in ``tokens`` / ``where`` of the whole harvest, for contexts). With ``shuffle``, the shard order and the order within each shard are permuted by a
    generator seeded with ``seed``: the same seed gives the same batches, from disk or memory.
    Without, batches follow stream order. The last batch is smaller unless ``drop_last``.
    """
    if batch_size < 1:
        raise DictionaryError(f"batch_size must be >= 1, got {batch_size}")
    first = next(iter(members.values()))
    starts = [0]
    for s in first._shards:
        starts.append(starts[-1] + s.n)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(first.n_shards, generator=gen).tolist() if shuffle else range(first.n_shards)
    rest: dict[str, Tensor] = {}
    for k in order:
        shard = {name: acts._shards[k].load() for name, acts in members.items()}
        shard["tokens"] = first._shards[k].tokens
        shard["index"] = torch.arange(starts[k], starts[k + 1])
        if shuffle:
            perm = torch.randperm(first._shards[k].n, generator=gen)
            shard = {name: t[perm] for name, t in shard.items()}
        if rest:
            shard = {name: torch.cat([rest[name], t]) for name, t in shard.items()}
        n = shard["tokens"].shape[0]
        full = n - n % batch_size
        for lo in range(0, full, batch_size):
            yield {name: t[lo:lo + batch_size] for name, t in shard.items()}
        rest = {name: t[full:] for name, t in shard.items()} if full < n else {}
    if rest and not drop_last:
        yield rest


# -- harvesting --------------------------------------------------------------------------------
def _check_layers(layers: Sequence[int], n_layers: int, name: str) -> list[int]:
    if isinstance(layers, int) or not isinstance(layers, Sequence) or not layers:
        raise DictionaryError(f"layers must be a non-empty list of block indices 0..{n_layers - 1}, got {layers!r}")
    bad = [layer for layer in layers if not isinstance(layer, int) or not 0 <= layer < n_layers]
    if bad:
        raise DictionaryError(f"layers {bad} out of range for {name!r} ({n_layers} blocks); valid: 0..{n_layers - 1}")
    if len(set(layers)) != len(layers):
        raise DictionaryError(f"layers {list(layers)} repeat a layer; give each once")
    return list(layers)


def _options(layers, seq_len: int, batch_size: int, dtype, hook: str, shard_windows: int) -> torch.dtype:
    if hook not in HOOKS:
        raise DictionaryError(f"unknown hook {hook!r}; valid: {', '.join(HOOKS)}")
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise DictionaryError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    if dtype not in DTYPES.values():
        raise DictionaryError(f"unknown dtype {dtype}; valid: {', '.join(DTYPES)}")
    for option, value, low in (("seq_len", seq_len, 2), ("batch_size", batch_size, 1), ("shard_windows", shard_windows, 1)):
        if not isinstance(value, int) or value < low:
            raise DictionaryError(f"{option} must be an integer >= {low}, got {value!r}")
    return dtype


def _identity(source: str | LM) -> dict:
    """What a member is: its folder's / hub id's identity, or for a model built in memory its
    name and a hash of its config and of a few weights."""
    if isinstance(source, str):
        return model_identity(source)
    if Path(str(source.name)).is_dir():
        return model_identity(source.name)
    params = [p.detach().flatten()[:64].float().tolist() for p in list(source.model.parameters())[:4]]
    return {"kind": "memory", "name": source.name, "digest": digest([source.model.config.to_dict(), params])}


def _texts_hash(texts: Sequence[Any]) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update((text if isinstance(text, str) else json.dumps([int(t) for t in text])).encode())
        h.update(b"\0")
    return h.hexdigest()


class _Folder:
    """A harvest folder: its config (written once, checked on every rerun) and its shards."""

    def __init__(self, out: Path, config: dict):
        self.out = Path(out)
        self.config = config
        path = self.out / "config.json"
        if path.exists():
            old = json.loads(path.read_text())
            if old != config:
                differ = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
                raise DictionaryError(
                    f"{self.out} holds a harvest made with another configuration (differs in: {', '.join(differ)}); "
                    "pass another folder, or delete this one to harvest anew")
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
            os.replace(tmp, path)

    def shard_path(self, member: str, k: int) -> Path:
        return self.out / member / f"shard_{k:05d}.safetensors"

    def done(self, member: str, n_shards: int) -> bool:
        return all(self.shard_path(member, k).exists() for k in range(n_shards))

    def read(self, member: str, k: int) -> _Shard:
        path = self.shard_path(member, k)
        with safe_open(str(path), "pt") as f:
            tokens, where = f.get_tensor("tokens"), f.get_tensor("where")
        return _Shard(int(tokens.shape[0]), tokens, where, None, path)

    def write(self, member: str, k: int, shard: _Shard) -> _Shard:
        path = self.shard_path(member, k)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file({"acts": shard.acts.contiguous(), "tokens": shard.tokens, "where": shard.where}, str(tmp))
        os.replace(tmp, path)  # a shard on disk is always complete
        return _Shard(shard.n, shard.tokens, shard.where, None, path)


def _run_shard(lm: LM, windows: list[Tensor], first: int, names: list[str], bos: int | None,
               batch_size: int, dtype: torch.dtype, bar) -> _Shard:
    """Windows ``first, first+1, ...`` through ``lm``: kept tokens' activations ``[n, layer, d]``."""
    acts, tokens, where = [], [], []
    for lo in range(0, len(windows), batch_size):
        batch = windows[lo:lo + batch_size]
        # logits=False: the forward stops after the deepest harvested block.
        run = lm.run(batch, capture=names, logits=False)
        ids, mask = run.tokens.cpu(), run.attention_mask.cpu()
        keep = _kept(ids, mask, bos)
        stacked = torch.stack([run.cache[name] for name in names], 2)  # [batch, seq, layer, d]
        acts.append(stacked[keep.to(stacked.device)].to(device="cpu", dtype=dtype))
        tokens.append(ids[keep])
        pos = (mask.cumsum(-1) - 1)
        window = torch.arange(first + lo, first + lo + len(batch)).unsqueeze(1).expand_as(ids)
        where.append(torch.stack([window[keep], pos[keep]], -1))
        bar.update(int(mask.sum()))
    acts_t, tokens_t = torch.cat(acts), torch.cat(tokens)
    return _Shard(int(tokens_t.shape[0]), tokens_t, torch.cat(where), acts_t)


def _harvest_member(lm: LM, windows: list[Tensor], layers: list[int], hook: str, batch_size: int,
                    shard_windows: int, dtype: torch.dtype, folder: _Folder | None, member: str,
                    progress: bool) -> Activations:
    names = [f"blocks.{layer}.hook_{hook}" for layer in layers]
    bos = bos_id(lm)
    n_shards = -(-len(windows) // shard_windows)
    shards = []
    if folder is not None:
        index = folder.out / member / "shards.json"
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text(json.dumps({"n_shards": n_shards, "d_model": lm.d_model}) + "\n")
    total = sum(len(w) for w in windows)
    with tqdm(total=total, desc=f"harvest {member}", unit="tok", disable=not progress, leave=False) as bar:
        for k in range(n_shards):
            if folder is not None and folder.shard_path(member, k).exists():
                shard = folder.read(member, k)  # finished: never recomputed
                bar.update(sum(len(w) for w in windows[k * shard_windows:(k + 1) * shard_windows]))
            else:
                shard = _run_shard(lm, windows[k * shard_windows:(k + 1) * shard_windows], k * shard_windows,
                                   names, bos, batch_size, dtype, bar)
                if folder is not None:
                    shard = folder.write(member, k, shard)
            shards.append(shard)
    return Activations(shards, layers, hook, lm.d_model, dtype)


def _config(identities: dict, texts, layers, hook, seq_len, batch_size, shard_windows, dtype) -> dict:
    return {"format": FORMAT, "models": identities, "texts_sha256": _texts_hash(texts), "n_texts": len(texts),
            "layers": list(layers), "hook": hook, "seq_len": seq_len, "batch_size": batch_size,
            "shard_windows": shard_windows, "dtype": str(dtype).removeprefix("torch.")}


def harvest(lm: LM, texts: Sequence[str], layers: Sequence[int], *, hook: str = "resid_post", seq_len: int = 128,
            batch_size: int = 8, out: Path | None = None, dtype=torch.float32, progress: bool = True,
            shard_windows: int = SHARD_WINDOWS, member: str = "model") -> Activations:
    """One model's ``blocks.{l}.hook_{hook}`` at every kept token of ``texts`` (module doc).

    ``out``: a folder to write shards to (resumable) or ``None`` to keep them in memory.
    """
    dtype = _options(layers, seq_len, batch_size, dtype, hook, shard_windows)
    layers = _check_layers(layers, lm.n_layers, lm.name)
    _check_seq_len(lm, seq_len)
    windows = token_windows(lm, texts, seq_len)
    folder = None if out is None else _Folder(
        out, _config({member: _identity(lm)}, texts, layers, hook, seq_len, batch_size, shard_windows, dtype))
    return _harvest_member(lm, windows, layers, hook, batch_size, shard_windows, dtype, folder, member, progress)


def _check_seq_len(lm: LM, seq_len: int) -> None:
    if lm.max_positions is not None and seq_len > lm.max_positions:
        raise DictionaryError(f"seq_len {seq_len} exceeds {lm.name!r}'s context of {lm.max_positions} tokens; "
                              f"valid: 2..{lm.max_positions}")


def _first_difference(a: list[Tensor], b: list[Tensor]) -> str:
    for w, (x, y) in enumerate(zip(a, b)):
        if x.shape != y.shape or not torch.equal(x, y):
            n = min(len(x), len(y))
            p = next((i for i in range(n) if x[i] != y[i]), n)
            got = (f"id {int(x[p])} in base, {int(y[p])} in chat" if p < n else f"{len(x)} vs {len(y)} tokens")
            return f"window {w}, position {p}: {got}"
    return f"{len(a)} vs {len(b)} windows"


def harvest_pair(pair: Pair | str | tuple[LM, LM], texts: Sequence[str], layers: Sequence[int], *,
                 hook: str = "resid_post", seq_len: int = 128, batch_size: int = 8, out: Path | None = None,
                 dtype=torch.float32, progress: bool = True, shard_windows: int = SHARD_WINDOWS) -> PairActivations:
    """Both members' ``blocks.{l}.hook_{hook}`` at the same kept tokens of ``texts``.

    Args:
        pair: a ``Pair`` (``interp.load_pair(...)``; members load one at a time, and a member
            whose shards are all on disk is not loaded), a registry pair name, or ``(base_lm, chat_lm)``.
        texts: the corpus; each member tokenizes it, and the two token streams must be equal.
        layers: block indices; hook: ``"resid_post"`` (default) or ``"resid_pre"``.
        seq_len, batch_size: window length (at most the models' context) and windows per forward.
        out: folder for resumable shards, or ``None`` to keep everything in memory.
        dtype: storage dtype (``torch.float32``, ``bfloat16``, ``float16`` or their names).
        shard_windows: windows per shard (the unit of resumption).
    """
    dtype = _options(layers, seq_len, batch_size, dtype, hook, shard_windows)
    if isinstance(pair, str):
        pair = load_pair(pair)
    if isinstance(pair, Pair):
        pair.check()
        sources = {member: pair.spec.source(member) for member in MEMBERS}
        identities = {member: _identity(source) for member, source in sources.items()}
        models = None
    elif isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(m, LM) for m in pair):
        models = dict(zip(MEMBERS, pair))
        identities = {member: _identity(lm) for member, lm in models.items()}
    else:
        raise DictionaryError(f"pair must be an interp Pair, a registry name or a (base_lm, chat_lm) tuple; "
                              f"got {type(pair).__name__}")
    folder = None if out is None else _Folder(
        out, _config(identities, texts, list(layers), hook, seq_len, batch_size, shard_windows, dtype))
    members: dict[str, Activations] = {}
    reference: list[Tensor] | None = None
    for member in MEMBERS:
        if folder is not None and models is None and _all_done(folder, member):
            members[member] = _read_member(folder, member, list(layers), hook, dtype)
            continue
        lm = models[member] if models is not None else pair.load(member)
        layers = _check_layers(layers, lm.n_layers, lm.name)
        _check_seq_len(lm, seq_len)
        windows = token_windows(lm, texts, seq_len)
        if reference is None:
            other = next((m for m in members.values()), None)
            reference = windows
            if other is not None and not torch.equal(torch.cat(windows)[_kept_1d(windows, lm)], other.tokens):
                raise DictionaryError("base and chat tokenize the texts differently; a pair must share a tokenizer")
        elif len(windows) != len(reference) or any(not torch.equal(a, b) for a, b in zip(reference, windows)):
            raise DictionaryError(f"base and chat tokenize the texts differently ({_first_difference(reference, windows)}); "
                                  "a pair must share a tokenizer")
        members[member] = _harvest_member(lm, windows, layers, hook, batch_size, shard_windows, dtype, folder,
                                          member, progress)
        del lm
    # Members of two widths are allowed here (a crosscoder can read them); a shared dictionary checks.
    return PairActivations(members)


def _kept_1d(windows: list[Tensor], lm: LM) -> Tensor:
    ids = torch.cat(windows)
    return _kept(ids, torch.ones_like(ids), bos_id(lm))


def _all_done(folder: _Folder, member: str) -> bool:
    """Every shard of ``member`` on disk: the count is known once the member wrote its list."""
    index = folder.out / member / "shards.json"
    if not index.exists():
        return False
    n = json.loads(index.read_text())["n_shards"]
    return folder.done(member, n)


def _read_member(folder: _Folder, member: str, layers: list[int], hook: str, dtype: torch.dtype) -> Activations:
    index = json.loads((folder.out / member / "shards.json").read_text())
    shards = [folder.read(member, k) for k in range(index["n_shards"])]
    return Activations(shards, layers, hook, index["d_model"], dtype)
