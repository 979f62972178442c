"""Loading models and pairs: dtype, device / device_map, 4-bit / 8-bit, clear failures.

A pair's two members are loaded one after the other, never both in memory: iterate over
``load_pair(...)`` and keep only reduced results.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from interp import reward
from interp.adapters import arch_for, classifier_kind
from interp.devices import check_device_map
from interp.encoder import EncoderRewardModel
from interp.errors import LoadError
from interp.model import LM
from interp.registry import MEMBERS, PairSpec, get_pair, resolve

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
QUANTIZATIONS = ("4bit", "8bit")


def parse_dtype(dtype) -> torch.dtype | str | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    try:
        return DTYPES[dtype]
    except KeyError:
        raise LoadError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}, auto") from None


def quantization_config(quantization: str, compute_dtype: torch.dtype = torch.bfloat16):
    """A ``BitsAndBytesConfig``; raises LoadError where bitsandbytes cannot run (no CUDA)."""
    if quantization not in QUANTIZATIONS:
        raise LoadError(f"unknown quantization {quantization!r}; valid: {', '.join(QUANTIZATIONS)}")
    if not torch.cuda.is_available():
        raise LoadError(
            f"{quantization} quantization through bitsandbytes needs a CUDA GPU, and this machine has "
            "none; load without quantization (e.g. dtype='bfloat16') or run on a GPU machine"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise LoadError(f"{quantization} quantization needs bitsandbytes: pip install -e '.[quant]'") from None
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute_dtype,
                                  bnb_4bit_quant_type="nf4")
    return BitsAndBytesConfig(load_in_8bit=True)


# device_map strings accelerate understands itself; any other string is read as one device.
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


def available_devices() -> list[str]:
    """The devices a model can be put on here (``cpu``, and ``cuda``/``cuda:i``, ``mps``, ``xpu``
    where present)."""
    out = ["cpu"]
    for kind, backend in (("cuda", torch.cuda), ("xpu", getattr(torch, "xpu", None))):
        if backend is not None and backend.is_available():
            out += [kind] + [f"{kind}:{i}" for i in range(backend.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append("mps")
    return out


def check_device(device, what: str = "device") -> None:
    """Raise LoadError unless ``device`` names a device this machine has (before any loading:
    torch's own failure comes deep inside ``.to()`` or, for ``meta``, at the first forward)."""
    valid = available_devices()
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is not None and parsed.type == "meta":
        raise LoadError(f"{what} 'meta' holds no weights, so nothing can run on it; valid here: {', '.join(valid)}")
    # "cuda" and "cuda:0" are listed as such; "cpu:0" / "mps:0" name the one cpu / mps device.
    known = parsed is not None and (str(parsed) in valid or (parsed.type in ("cpu", "mps") and parsed.type in valid
                                                             and parsed.index in (None, 0)))
    if not known:
        raise LoadError(f"{what} {str(device)!r} is not available on this machine; valid here: {', '.join(valid)}")


def check_model_folder(folder: str | os.PathLike[str]) -> None:
    """Raise LoadError unless ``folder`` holds a model: a ``config.json`` and weight files.

    Without this, a folder holding only a tokenizer (or nothing) fails inside transformers with
    a message about ``model_type``, sentencepiece or tiktoken that names neither problem.
    """
    path = Path(folder)
    if not path.is_dir():
        raise LoadError(f"no model folder at {str(folder)!r}")
    has_config = (path / "config.json").is_file()
    has_weights = any(next(path.glob(pattern), None) for pattern in WEIGHT_PATTERNS)
    if not (has_config and has_weights):
        found = sorted(p.name for p in path.iterdir())
        shown = ", ".join(found[:12]) + (f", ... {len(found) - 12} more" if len(found) > 12 else "")
        raise LoadError(f"no model in {str(folder)!r}: expected config.json and *.safetensors/*.bin "
                        f"(found: {shown or 'nothing, the folder is empty'})")


@contextmanager
def _loading_bars(progress: bool) -> Iterator[None]:
    """Hide transformers' "Loading weights" bar during one load unless ``progress``; the hub's
    download bars (huggingface_hub's own switch) are left as they are."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as hf_logging

    if progress or not hf_logging.is_progress_bar_enabled():
        yield
        return
    hub_on = not are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # also turns the hub's bars off: restored just below
    if hub_on:
        enable_progress_bars()
    try:
        yield
    finally:
        hf_logging.enable_progress_bar()
        if not hub_on:
            disable_progress_bars()


def _explain_failure(source: str, err: Exception) -> LoadError:
    local = os.path.isdir(source) or source.startswith((".", "/", "~"))
    if local:
        return LoadError(f"could not load a model from the folder {source!r}: {err}")
    return LoadError(
        f"could not load {source!r} from the Hugging Face hub or its local cache ({type(err).__name__}). "
        "Either the machine is offline and the weights are not cached, the id is wrong, or the "
        "model is gated (Llama: accept the licence on its hub page, then `huggingface-cli login`). "
        "Or point at a local folder (interp.load('/path/to/model'), or --base PATH --chat PATH)."
    )


BACKENDS = ("torch", "nnsight")


def check_hosted_source(source: str, what: str) -> None:
    if os.path.isdir(source) or source.startswith((".", "/", "~")):
        raise LoadError(f"{what} is a local folder, and NDIF runs only the hub models it hosts; "
                        "run it here without remote, or name a hosted hub id")


def check_backend(backend: str, remote) -> None:
    if backend not in BACKENDS:
        raise LoadError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if remote and backend != "nnsight":
        raise LoadError("remote runs go through nnsight: pass backend='nnsight' (--backend nnsight) with remote")


def load(name_or_path: str, *, dtype=None, device=None, device_map=None, quantization=None,
         progress: bool = False, head: str | None = None, backend: str = "torch",
         remote: bool | str = False, offload_folder=None, capture_device=None) -> LM | EncoderRewardModel:
    """Load a causal LM (registry name like ``toy/base``, hub id, or local folder) as an ``LM``.

    ``head``: ``"causal"`` (an ``LM``), ``"classifier"`` (a reward model, see ``interp.reward``),
    or ``None``: a classifier when the config's architectures name a ``*ForSequenceClassification``
    (so ``load("toy/reward")`` is a reward model).

    ``device`` must be one of :func:`available_devices`; a local folder must hold a
    ``config.json`` and weights. transformers' weight-loading bar shows only with ``progress``.

    ``backend="nnsight"`` runs every forward as an nnsight trace (``interp.nnsight_backend``);
    with ``remote=True`` on NDIF's copy of the hub model (no weights are loaded here), with
    ``remote="local"`` as a dry run of that path on the local weights.

    Across devices (``interp.devices``): ``device_map`` is a strategy (``"auto"``, ...) or a
    dict module name -> device, ``"cpu"`` or ``"disk"`` (``"*"``: every module not named),
    checked against the model's module names before loading; ``"disk"`` needs
    ``offload_folder``. ``capture_device`` is where ``LM.run`` returns captures and logits
    (default: the device the embedding runs on).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    check_backend(backend, remote)
    source = resolve(name_or_path)
    if remote is True:
        check_hosted_source(source, repr(name_or_path))
        if head == "classifier" or any(v is not None for v in (dtype, device, device_map, quantization)):
            raise LoadError("remote=True runs NDIF's copy of the model, whose dtype, devices and quantization "
                            "are NDIF's: drop --dtype/--device/--device-map/--quantization (and reward models)")
        from interp.nnsight_backend import load_remote

        lm = load_remote(source)
        lm.name = name_or_path
        return lm
    if os.path.sep in name_or_path and not os.path.exists(source) and name_or_path.startswith((".", "/", "~")):
        raise LoadError(f"no model folder at {source!r}")
    if device is not None:
        check_device(device)
        if device_map is not None:
            raise LoadError("give device (one device for the whole model) or device_map (modules to devices), not both")
    if isinstance(device_map, str) and device_map not in DEVICE_MAPS:
        check_device(device_map, "device_map")
    if capture_device is not None:
        check_device(capture_device, "capture_device")
    if os.path.isdir(source):
        check_model_folder(source)
    try:
        config = AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise _explain_failure(source, err) from err
    head = reward.head_of(config, head)
    if head == "classifier":  # fail on an unsupported family before fetching any weights
        classifier_kind(config)
    else:
        arch_for(config)
    if head == "classifier" and capture_device is not None:
        raise LoadError("capture_device is an option of causal LMs; a reward model's run returns on its own device")
    if isinstance(device_map, Mapping):
        if head == "classifier":
            raise LoadError("a device_map dict is checked against a causal LM's modules; for a reward model "
                            "give a strategy (device_map='auto') or one device")
        device_map = check_device_map(config, device_map, offload_folder, available_devices())
    auto = AutoModelForSequenceClassification if head == "classifier" else AutoModelForCausalLM
    kwargs: dict = {}
    torch_dtype = parse_dtype(dtype)
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype
    if quantization is not None:
        kwargs["quantization_config"] = quantization_config(quantization)
        kwargs.setdefault("device_map", device_map or "auto")
    elif device_map is not None:
        kwargs["device_map"] = device_map
    if offload_folder is not None:
        kwargs["offload_folder"] = str(offload_folder)
    try:
        with _loading_bars(progress):
            model = auto.from_pretrained(source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise _explain_failure(source, err) from err
    if device is not None and "device_map" not in kwargs:
        model = model.to(device)
    if head == "classifier":
        if backend != "torch":
            raise LoadError(f"reward models run with backend='torch' only, not {backend!r}")
        return reward.wrap(model, tokenizer, name=name_or_path)
    if backend == "nnsight":
        from interp.nnsight_backend import NNsightLM

        lm = NNsightLM(model, tokenizer, name=name_or_path, remote=remote)
        lm.capture_device = None if capture_device is None else torch.device(capture_device)
        return lm
    return LM(model, tokenizer, name=name_or_path, capture_device=capture_device)


@dataclass
class Pair:
    """A base/chat pair to load one member at a time (``for member, lm in pair: ...``)."""

    spec: PairSpec
    load_kwargs: dict = field(default_factory=dict)

    @classmethod
    def custom(cls, base: str, chat: str, name: str = "custom", **load_kwargs) -> "Pair":
        return cls(PairSpec(name, base, chat, tuning="user-given pair"), load_kwargs)

    @property
    def name(self) -> str:
        return self.spec.name

    def load(self, member: str) -> LM:
        return load(self.spec.source(member), **self.load_kwargs)

    def check(self) -> None:
        """Raise LoadError now if a member's local folder is missing or holds no model, or the
        device is not available, rather than after the first member's work."""
        for option in ("device", "device_map"):
            value = self.load_kwargs.get(option)
            if isinstance(value, str) and not (option == "device_map" and value in DEVICE_MAPS):
                check_device(value, option)
        for member in MEMBERS:
            source = self.spec.source(member)
            if os.path.isdir(source):
                check_model_folder(source)
            elif source.startswith((".", "/", "~")):
                raise LoadError(f"no model folder at {source!r} (the {member} member of pair {self.name!r})")

    def __iter__(self) -> Iterator[tuple[str, LM]]:
        self.check()
        vocab = None
        for member in MEMBERS:
            lm = self.load(member)
            this_vocab = lm.tokenizer.get_vocab() if lm.tokenizer is not None else None
            if vocab is not None and this_vocab != vocab:
                raise LoadError(
                    f"pair {self.name!r}: base and chat tokenizers differ ({vocab_difference(vocab, this_vocab)}); "
                    "per-token comparisons would be silently wrong"
                )
            vocab = this_vocab
            yield member, lm
            del lm
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def load_pair(name: str | None = None, *, base: str | None = None, chat: str | None = None, **load_kwargs) -> Pair:
    """A registry pair by name, or a custom pair from ``base`` and ``chat`` paths."""
    if base or chat:
        if not (base and chat):
            raise LoadError("a custom pair needs both --base and --chat")
        pair = Pair.custom(base, chat, **load_kwargs)
    else:
        pair = Pair(get_pair(name or "toy"), load_kwargs)
    if load_kwargs.get("remote") is True:  # before a study reads anything from the hub
        check_backend(load_kwargs.get("backend", "torch"), True)
        from interp.nnsight_backend import check_remote

        for member in MEMBERS:
            check_hosted_source(pair.spec.source(member), f"the {member} member of pair {pair.name!r}")
            check_remote(pair.spec.source(member))
    return pair


def vocab_difference(first: Mapping[str, int], second: Mapping[str, int], names: tuple[str, str] = ("base", "chat")) -> str:
    """What tells two tokenizer vocabularies apart, for an error message: their sizes and a few
    tokens only one of them has (``"100 vs 101 tokens; only in chat e.g. [...], only in base e.g. [...]"``)."""
    only_first = sorted(set(first) - set(second))[:5]
    only_second = sorted(set(second) - set(first))[:5]
    return (f"{len(first)} vs {len(second)} tokens; only in {names[1]} e.g. {only_second}, "
            f"only in {names[0]} e.g. {only_first}")
