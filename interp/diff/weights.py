"""What RL changed in the weights: per stored tensor of a base/chat pair, streamed from the
safetensors files one tensor at a time (a 70B pair needs no GPU and about two tensors of memory).

For each tensor (``W`` base, ``W'`` chat, ``D = W' - W``) :func:`weight_diff` reports

- ``rel_change = ||D||_F / ||W||_F`` (and ``abs_change = ||D||_F``, ``base_norm``), in float64;
- ``n_changed``: entries with ``|D| > tol`` computed in float64 from the stored values; with
  ``tol = 0`` this counts exactly the entries whose stored values differ (``W' != W`` as stored,
  NaN aside); ``n_differ_fp32`` / ``n_differ_bf16``: entries that still differ after casting both
  sides to float32 / bfloat16 (bf16 hides updates smaller than about 2^-8 of the weight: a pair
  stored in bf16 reports what survived that rounding, never the optimiser's full update);
- the spectrum of ``D`` for matrices (2-D tensors) with ``min(shape) <= spectrum_max_dim``: the
  top-k singular values ``sv_1..sv_k``, the *effective rank* ``exp(H(s / sum s))`` (entropy of
  the normalised singular values, Roy & Vetterli 2007; 1 for a rank-1 change, ``min(shape)``
  for a flat spectrum) and the *stable rank* ``||D||_F^2 / sv_1^2``; ``NaN`` for vectors, for
  larger matrices (a full SVD of an LM's embedding takes minutes; raise the limit to pay it) and
  for ``D = 0``.

Where a tensor sits (``module``, ``layer``) comes from the family's adapter row
(:mod:`interp.adapters`): under ``Arch.blocks.{layer}`` the block-relative path names the
module (``attn_q``/``attn_k``/``attn_v``/``attn_o``/``attn_qkv`` where the row names those
projections, else the path itself, e.g. ``mlp.gate_proj``, ``input_layernorm``); outside the
blocks ``embed``, ``pos_embed``, ``final_norm`` and ``unembed``; anything else keeps its path.
A tied unembedding is not stored separately, so it appears as ``embed`` only.

Sources are local folders or hub ids; a hub id's ``*.safetensors`` and ``*.json`` files come
from ``huggingface_hub.snapshot_download``: the cached snapshot (``HF_HUB_CACHE``, the one
``refs/main`` names) when offline (``HF_HUB_OFFLINE=1``), else downloaded once. One file
(``model.safetensors``) or shards (``model.safetensors.index.json``) alike.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from interp.adapters import Arch, arch_for
from interp.errors import InterpError, LoadError

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
# Elements reduced at a time in float64: bounds memory for the largest tensors of a big model.
CHUNK = 2**24
SPECTRUM_MAX_DIM = 4096  # every matrix of a 7B Llama; above this the SVD is opt-in


class WeightMismatch(InterpError):
    """The two models do not store the same tensors (names or shapes differ)."""


@dataclass(frozen=True)
class TensorDiff:
    """The change of one stored tensor. ``layer`` is ``None`` outside the blocks; spectrum
    fields are ``NaN`` where not computed (see the module docstring)."""

    name: str
    module: str
    param: str
    layer: int | None
    shape: tuple[int, ...]
    dtype: str
    n_params: int
    base_norm: float
    abs_change: float
    rel_change: float
    n_changed: int
    n_differ_fp32: int
    n_differ_bf16: int
    singular_values: tuple[float, ...] = ()
    effective_rank: float = math.nan
    stable_rank: float = math.nan
    extra: dict = field(default_factory=dict)

    @property
    def frac_changed(self) -> float:
        return self.n_changed / self.n_params if self.n_params else math.nan

    def row(self, top_k: int) -> dict:
        """A flat dict (``sv_1..sv_k`` columns, ``NaN`` past the computed ones)."""
        svs = list(self.singular_values) + [math.nan] * max(0, top_k - len(self.singular_values))
        return {"name": self.name, "module": self.module, "param": self.param, "layer": self.layer,
                "shape": "x".join(map(str, self.shape)), "dtype": self.dtype, "n_params": self.n_params,
                "base_norm": self.base_norm, "abs_change": self.abs_change, "rel_change": self.rel_change,
                "n_changed": self.n_changed, "frac_changed": self.frac_changed, "n_differ_fp32": self.n_differ_fp32,
                "n_differ_bf16": self.n_differ_bf16, "frac_differ_bf16": self.n_differ_bf16 / self.n_params,
                **{f"sv_{i + 1}": svs[i] for i in range(top_k)},
                "effective_rank": self.effective_rank, "stable_rank": self.stable_rank}


# -- files ----------------------------------------------------------------------------------------
def _folder(source: str | os.PathLike[str]) -> Path:
    """A local model folder, or a hub id's snapshot (safetensors and JSON files only)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if str(source).startswith((".", "/", "~")) or path.exists():
        raise LoadError(f"no model folder at {str(source)!r}")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:  # the cached snapshot (HF_HUB_CACHE) when offline, else the hub's files (downloaded once)
        return Path(snapshot_download(str(source), allow_patterns=["*.safetensors", "*.json"]))
    except LocalEntryNotFoundError:
        if not constants.is_offline_mode():
            raise LoadError(f"could not reach the hub for {str(source)!r}, and it is not in the local hub cache "
                            f"({constants.HF_HUB_CACHE}); go online, or give a local folder") from None
        raise LoadError(f"hub id {str(source)!r} is not in the local hub cache ({constants.HF_HUB_CACHE}) and "
                        f"HF_HUB_OFFLINE is set: download it once online (hf download {source} --include "
                        "'*.safetensors' '*.json'), point HF_HUB_CACHE at a cache holding it, or give a local "
                        "folder") from None
    except Exception as err:  # gated, unknown id: say which and how to proceed
        raise LoadError(f"could not fetch the safetensors files of {str(source)!r} ({type(err).__name__}: {err}); "
                        "give a local folder, or log in (gated models) / check the id") from None


def tensor_files(source: str | os.PathLike[str]) -> dict[str, Path]:
    """Tensor name -> the safetensors file holding it (``model.safetensors``, or the shards
    of ``model.safetensors.index.json``)."""
    from safetensors import safe_open

    folder = _folder(source)
    if (folder / INDEX).is_file():
        weight_map = json.loads((folder / INDEX).read_text(encoding="utf-8")).get("weight_map", {})
        missing = sorted({f for f in weight_map.values() if not (folder / f).is_file()})
        if missing:
            raise LoadError(f"{folder / INDEX} names shard files that are not there: {', '.join(missing[:3])}")
        return {name: folder / f for name, f in weight_map.items()}
    if (folder / SINGLE).is_file():
        with safe_open(str(folder / SINGLE), "pt") as f:
            return {name: folder / SINGLE for name in f.keys()}
    found = sorted(p.name for p in folder.iterdir())[:8]
    raise LoadError(f"no {SINGLE} or {INDEX} in {folder} (found: {', '.join(found) or 'nothing'}); "
                    "weight diffing reads safetensors files (save_pretrained writes them)")


def _shapes(files: dict[str, Path]) -> dict[str, tuple[tuple[int, ...], str]]:
    from safetensors import safe_open

    out = {}
    for path in sorted(set(files.values())):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                if files.get(name) == path:
                    s = f.get_slice(name)
                    out[name] = (tuple(s.get_shape()), s.get_dtype())
    return out


def check_same_tensors(base: dict[str, tuple], chat: dict[str, tuple]) -> None:
    """Raise WeightMismatch naming a few tensors that only one side has, or whose shapes differ."""
    only_base, only_chat = sorted(set(base) - set(chat)), sorted(set(chat) - set(base))
    if only_base or only_chat:
        raise WeightMismatch(f"base and chat store different tensors: {len(only_base)} only in base (e.g. "
                             f"{only_base[:3]}), {len(only_chat)} only in chat (e.g. {only_chat[:3]}); "
                             "weight diffing needs two checkpoints of one architecture")
    shapes = [n for n in sorted(base) if base[n][0] != chat[n][0]]
    if shapes:
        raise WeightMismatch(f"{len(shapes)} tensors differ in shape between base and chat, e.g. "
                             + ", ".join(f"{n} {list(base[n][0])} vs {list(chat[n][0])}" for n in shapes[:3]))


# -- names ----------------------------------------------------------------------------------------
def locate(name: str, arch: Arch) -> tuple[str, int | None, str]:
    """``(module, layer, param)`` of a stored tensor name, by the adapter row ``arch``."""
    path, _, param = name.rpartition(".")
    if not path:
        return name, None, ""
    prefix = arch.blocks + "."
    if path.startswith(prefix):
        layer_text, _, rel = path[len(prefix):].partition(".")
        if layer_text.isdigit():
            named = {getattr(arch, f): f for f in ("attn_q", "attn_k", "attn_v", "attn_o", "attn_qkv")
                     if getattr(arch, f)}
            return named.get(rel, rel or "block"), int(layer_text), param
    outside = {arch.embed: "embed", arch.final_norm: "final_norm", arch.unembed: "unembed"}
    if arch.pos_embed:
        outside[arch.pos_embed] = "pos_embed"
    return outside.get(path, path), None, param


# -- statistics -----------------------------------------------------------------------------------
def _spectrum(diff: torch.Tensor, top_k: int) -> tuple[tuple[float, ...], float, float]:
    s = torch.linalg.svdvals(diff.double() if diff.numel() <= CHUNK else diff.float()).double()
    total = float(s.sum())
    if total == 0.0:
        return tuple(0.0 for _ in range(min(top_k, s.numel()))), math.nan, math.nan
    p = s / total
    p = p[p > 0]
    entropy = float(-(p * p.log()).sum())
    return tuple(float(v) for v in s[:top_k]), math.exp(entropy), float((s**2).sum() / s[0] ** 2)


def tensor_diff(name: str, base: torch.Tensor, chat: torch.Tensor, arch: Arch, tol: float = 0.0, top_k: int = 4,
                spectrum_max_dim: int = SPECTRUM_MAX_DIM) -> TensorDiff:
    """The statistics of one tensor pair (as stored: no cast before the exact counts)."""
    module, layer, param = locate(name, arch)
    b, c = base.reshape(-1), chat.reshape(-1)
    sq_base = sq_diff = 0.0
    n_changed = n_fp32 = n_bf16 = 0
    for start in range(0, b.numel(), CHUNK):  # float64 chunks: exact enough sums in bounded memory
        bb, cc = b[start:start + CHUNK], c[start:start + CHUNK]
        d = cc.double() - bb.double()
        sq_base += float((bb.double() ** 2).sum())
        sq_diff += float((d**2).sum())
        n_changed += int((d.abs() > tol).sum())
        n_fp32 += int((bb.float() != cc.float()).sum())
        n_bf16 += int((bb.to(torch.bfloat16) != cc.to(torch.bfloat16)).sum())
    abs_change, base_norm = math.sqrt(sq_diff), math.sqrt(sq_base)
    svs, eff, stable = (), math.nan, math.nan
    if base.ndim == 2 and min(base.shape) <= spectrum_max_dim and top_k > 0:
        svs, eff, stable = _spectrum(chat.double() - base.double() if base.numel() <= CHUNK
                                     else chat.float() - base.float(), top_k)
    return TensorDiff(name=name, module=module, param=param, layer=layer, shape=tuple(base.shape),
                      dtype=str(base.dtype).removeprefix("torch."), n_params=b.numel(), base_norm=base_norm,
                      abs_change=abs_change, rel_change=abs_change / base_norm if base_norm else math.nan,
                      n_changed=n_changed, n_differ_fp32=n_fp32, n_differ_bf16=n_bf16, singular_values=svs,
                      effective_rank=eff, stable_rank=stable)



def weight_diff(base_source: str | os.PathLike[str], chat_source: str | os.PathLike[str], tol: float = 0.0,
                top_k: int = 4, spectrum_max_dim: int = SPECTRUM_MAX_DIM,
                names: Sequence[str] | None = None) -> Iterator[TensorDiff]:
    """:class:`TensorDiff` of every tensor (or of ``names``), one tensor pair in memory at a
    time. Sources: local folders (``config.json`` + safetensors) or hub ids."""
    from safetensors import safe_open
    from transformers import AutoConfig

    if tol < 0:
        raise InterpError(f"tol must be >= 0, got {tol}")
    base_files, chat_files = tensor_files(base_source), tensor_files(chat_source)
    check_same_tensors(_shapes(base_files), _shapes(chat_files))
    folder = _folder(base_source)
    if not (folder / "config.json").is_file():
        raise LoadError(f"no config.json in {folder}: the adapter row that names modules is chosen by it")
    arch = arch_for(AutoConfig.from_pretrained(str(folder)))
    wanted = sorted(base_files) if names is None else list(names)
    unknown = [n for n in wanted if n not in base_files]
    if unknown:
        raise WeightMismatch(f"no tensors named {unknown[:3]}; stored e.g. {sorted(base_files)[:3]}")
    for name in wanted:
        with safe_open(str(base_files[name]), "pt") as fb, safe_open(str(chat_files[name]), "pt") as fc:
            base, chat = fb.get_tensor(name), fc.get_tensor(name)
        yield tensor_diff(name, base, chat, arch, tol=tol, top_k=top_k, spectrum_max_dim=spectrum_max_dim)
        del base, chat
