"""What a model *is*, cheaply: an identity record that changes when its weights or config do.

A run folder of a study records the identity of each model it used, so that rows computed from
one model are never mixed with rows of another (``studies._identity``). Two kinds:

- a **local folder**: its absolute path; a hash of each small file (config, generation config,
  tokenizer files, chat template, index files); and for each weight file (``*.safetensors``,
  ``*.bin``, ...) its size and a hash of its header. A safetensors header (8-byte length +
  JSON: every tensor's name, dtype, shape and offsets) changes when the architecture does but
  not when a retraining keeps the shapes, so a weight file also contributes a hash of a few
  small blocks sampled from its data (``SAMPLES`` x ``BLOCK`` bytes: under a megabyte read
  per file even for a 70B model), and a file under ``FULL_HASH_BELOW`` bytes is hashed whole.
  Timestamps are ignored: copying or touching a folder does not change its identity.
- a **hub id**: the id and the revision, resolved to a commit where it can be (the local
  Hugging Face cache, else fetching ``config.json``, which loading the model would fetch
  anyway); ``revision_kind`` says whether ``revision`` is a resolved ``"commit"`` or only
  the ``"requested"`` name (offline and not cached).

``model_identity(source)`` returns a plain JSON-able dict with a short ``digest`` of the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack")
SMALL_SUFFIXES = (".json", ".jinja", ".model", ".txt", ".tiktoken", ".py", ".vocab")  # config, tokenizer
FULL_HASH_BELOW = 64 * 2**20  # files smaller than this are hashed whole (the toy pair, small models)
SAMPLES, BLOCK = 16, 4096  # blocks sampled from a larger weight file's data
_COMMIT = re.compile(r"[0-9a-f]{40}")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(obj) -> str:
    """A short (16 hex) hash of a JSON-able object, independent of dict order."""
    return _sha(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode())[:16]


def _weight_file(path: Path) -> dict:
    """Size, header hash and sampled-data hash of a weight file, reading at most ~1 MB of it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size < FULL_HASH_BELOW:
            return {"size": size, "sha256": _sha(f.read())}
        header_end = 0
        if path.suffix == ".safetensors":
            (n,) = struct.unpack("<Q", f.read(8))
            if 8 + n <= size:
                header_end = 8 + n
        if not header_end:  # other formats: their first block stands for the header
            header_end = min(size, 2**16)
        f.seek(0)
        header = _sha(f.read(header_end))
        samples = hashlib.sha256()
        span = size - header_end - BLOCK
        for i in range(SAMPLES):
            f.seek(header_end + (span * i // (SAMPLES - 1) if span > 0 else 0))
            samples.update(f.read(BLOCK))
        if path.suffix != ".safetensors":  # zip archives (torch .bin) list every entry's CRC at the end
            f.seek(max(0, size - 2**16))
            samples.update(f.read())
    return {"size": size, "header_sha256": header, "sampled_sha256": samples.hexdigest()}


def local_identity(folder: str | os.PathLike[str]) -> dict:
    """Identity of a model folder (see the module doc); files in subfolders and files that are
    neither weights nor small config / tokenizer files (README, images) are not read."""
    folder = Path(folder).expanduser().resolve()
    files = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix in WEIGHT_SUFFIXES:
            files[path.name] = _weight_file(path)
        elif path.suffix in SMALL_SUFFIXES:
            files[path.name] = {"sha256": _sha(path.read_bytes())}
    record = {"kind": "local", "path": str(folder), "files": files}
    return {**record, "digest": digest(record)}


def hub_identity(repo_id: str, revision: str | None = None, cache_dir: str | os.PathLike[str] | None = None) -> dict:
    """Identity of a hub model: id and revision, resolved to a commit when the local cache (or,
    online, fetching ``config.json``) tells it."""
    requested = revision or "main"
    commit = requested if _COMMIT.fullmatch(requested) else None
    if commit is None:
        try:
            from huggingface_hub import hf_hub_download, try_to_load_from_cache

            cached = try_to_load_from_cache(repo_id, "config.json", revision=requested, cache_dir=cache_dir)
            if not isinstance(cached, str):
                cached = hf_hub_download(repo_id, "config.json", revision=requested, cache_dir=cache_dir)
            name = Path(cached).parent.name  # .../snapshots/<commit>/config.json
            commit = name if _COMMIT.fullmatch(name) else None
        except Exception:  # offline, unknown id, gated: loading will say so; record what was asked
            commit = None
    record = {"kind": "hub", "id": repo_id, "revision": commit or requested,
              "revision_kind": "commit" if commit else "requested"}
    return {**record, "digest": digest(record)}


def model_identity(source: str, revision: str | None = None) -> dict:
    """Identity of the model ``interp.load(source)`` would load: a local folder if ``source``
    is one, else a hub id (registry names like ``toy/base`` are resolved first)."""
    from interp.registry import resolve

    source = resolve(str(source))
    if Path(source).expanduser().is_dir():
        return local_identity(source)
    if source.startswith((".", "/", "~")) or source.count("/") > 1:  # a path (a hub id is org/name)
        record = {"kind": "local", "path": str(Path(source).expanduser().resolve()), "files": None}
        return {**record, "digest": digest(record)}  # no such folder: loading it will fail and say so
    return hub_identity(source, revision)


def describe(identity: dict) -> str:
    """One short line: ``/abs/path #digest`` or ``org/name@rev (commit|requested)``."""
    if identity.get("kind") == "local":
        return f"{identity['path']} #{identity['digest'][:8]}"
    return f"{identity.get('id')}@{str(identity.get('revision'))[:12]} ({identity.get('revision_kind')})"
