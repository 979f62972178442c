"""Models spread over devices: accelerate ``device_map``, CPU and disk offload.

``interp.load(name, device_map=..., offload_folder=..., capture_device=...)`` hands the map to
transformers, which dispatches the model with accelerate: each module named in the map runs on
its device, and a module mapped to ``"cpu"`` on a GPU machine, or to ``"disk"``, keeps its
weights there (its parameters are ``meta`` tensors) and gets them from an ``AlignDevicesHook``
for the duration of its forward. Three things follow, handled here:

* where a module runs is its hook's ``execution_device``, not its parameters' device (which
  may be ``meta``): :func:`execution_device`;
* code that reads a weight itself instead of calling the module (the batched unembedding of a
  patching sweep, the logit lens's matmul, direct logit attribution) must first have the hook
  bring the weight in: :func:`weights_of`;
* a block's captures live on that block's device; ``LM.run`` moves them (and the logits) to
  one ``capture_device`` (default: where the embedding runs, the device inputs go to).

A ``device_map`` dict is checked against the model's module names before any weight is read
(:func:`check_device_map`): accelerate's own failure for a misspelt or missing key comes after
the weights are loaded, as a list of every uncovered parameter. ``"*"`` stands for every module
the map does not name, and in the text form ``model.layers.2-5=disk`` names layers 2 to 5
(:func:`parse_device_map`, what a study's ``--device-map`` takes).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from interp.errors import LoadError

OFFLOAD = ("cpu", "disk")  # map values that need no accelerator; "disk" needs an offload_folder
DEFAULT_KEY = "*"  # every module the map does not name


def _hooks(module: nn.Module) -> list:
    """The accelerate hooks attached to ``module`` (a ``SequentialHook`` unpacked)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return list(getattr(hook, "hooks", (hook,)))


def _as_device(value) -> torch.device:
    return torch.device(f"cuda:{value}") if isinstance(value, int) else torch.device(value)


def execution_device(module: nn.Module) -> torch.device:
    """The device ``module``'s forward runs on: its accelerate hook's ``execution_device``
    (the module's or, failing that, the first hooked submodule's), else its first real
    parameter's or buffer's device, else the CPU."""
    for m in module.modules():
        for hook in _hooks(m):
            device = getattr(hook, "execution_device", None)
            if device is not None:
                return _as_device(device)
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.device.type != "meta":
            return tensor.device
    return torch.device("cpu")


def is_dispatched(model: nn.Module) -> bool:
    """Whether accelerate dispatched ``model`` (hooks that move tensors or bring in weights)."""
    return any(_hooks(m) for m in model.modules())


def offloaded(module: nn.Module) -> bool:
    """Whether some weight of ``module`` is kept off its execution device (CPU or disk
    offload): reading it directly gives a ``meta`` tensor."""
    return any(getattr(h, "offload", False) for m in module.modules() for h in _hooks(m))


@contextmanager
def weights_of(module: nn.Module) -> Iterator[torch.device]:
    """Within the ``with``, every offloaded weight of ``module`` is a real tensor on its
    execution device (accelerate's ``align_module_device``, per hooked submodule); yields
    that device. A module without offload is left as it is."""
    device = execution_device(module)
    if not offloaded(module):
        yield device
        return
    from accelerate.utils import align_module_device

    with ExitStack() as stack:
        for m in module.modules():
            if any(getattr(h, "offload", False) for h in _hooks(m)):
                stack.enter_context(align_module_device(m))
        yield device


# -- the map: text form, checks ----------------------------------------------------------------
_RANGE = re.compile(r"^(?P<stem>.*\.)(?P<first>\d+)-(?P<last>\d+)$")


def parse_device_map(text: str | None):
    """A ``--device-map`` value: ``None``, a strategy (``auto``, ...) or one device as given,
    a JSON object, or ``key=device`` pairs separated by commas, where ``stem.i-j`` names
    modules ``stem.i`` .. ``stem.j`` and integer devices mean ``cuda:i``::

        model.embed_tokens=cpu,model.layers.0-2=cpu,model.layers.3-5=disk,*=cpu
    """
    if text is None:
        return None
    text = text.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as err:
            raise LoadError(f"--device-map is not valid JSON ({err.msg} at character {err.pos})") from None
        if not isinstance(parsed, dict):
            raise LoadError("--device-map JSON must be an object {module: device}")
        return parsed
    if "=" not in text:
        return text
    out: dict[str, object] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = (s.strip() for s in part.partition("="))
        if not (eq and key and value):
            raise LoadError(f"--device-map entry {part!r} is not module=device (e.g. model.layers.3=disk)")
        device = int(value) if value.isdigit() else value
        match = _RANGE.match(key)
        if match:
            first, last = int(match["first"]), int(match["last"])
            if last < first:
                raise LoadError(f"--device-map range {key!r} runs backwards; write {match['stem']}{last}-{first}")
            out.update({f"{match['stem']}{i}": device for i in range(first, last + 1)})
        else:
            out[key] = device
    return out


def _skeleton(config) -> nn.Module:
    """The causal LM of ``config`` with ``meta`` weights: its module names, nothing allocated."""
    try:
        from accelerate import init_empty_weights
    except ImportError:
        raise LoadError("a device_map needs accelerate (not installed): pip install -e '.[quant]'") from None
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        return AutoModelForCausalLM.from_config(config)


def _covered(name: str, keys) -> bool:
    return any(k == "" or name == k or name.startswith(k + ".") for k in keys)


def _uncovered_tops(model: nn.Module, keys) -> list[str]:
    """The outermost modules holding parameters none of ``keys`` covers (named once each)."""
    tops: list[str] = []
    for name, module in model.named_modules():
        if not name or any(name.startswith(t + ".") for t in tops):
            continue
        params = [f"{name}.{p}" for p, _ in module.named_parameters()]
        bufs = [f"{name}.{b}" for b, _ in module.named_buffers()]
        if (params or bufs) and not any(_covered(p, keys) for p in params + bufs):
            tops.append(name)
    return tops


def check_device_map(config, device_map: Mapping, offload_folder=None, valid_devices=()) -> dict:
    """``device_map`` with its ``"*"`` expanded, after checking it can work: each key names a
    module of the model (else the nearest names and the top-level modules are listed), each
    value a device this machine has (or ``cpu``/``disk``; ``disk`` with an ``offload_folder``),
    every parameter has a device, and tied input/output embeddings share one. Raises LoadError."""
    valid = list(valid_devices) + ["disk"]
    for key, value in device_map.items():
        shown = str(_as_device(value)) if isinstance(value, int) else str(value)
        if shown not in valid:
            raise LoadError(f"device_map[{key!r}] = {value!r} is not a device of this machine; valid here: {', '.join(valid)}")
        if value == "disk" and offload_folder is None:
            raise LoadError(f"device_map[{key!r}] = 'disk' needs an offload folder for the weights: "
                            "interp.load(..., offload_folder=PATH) or --offload-folder PATH")
    model = _skeleton(config)
    names = [n for n, _ in model.named_modules() if n]
    known = set(names)
    explicit = {k: v for k, v in device_map.items() if k != DEFAULT_KEY}
    for key in explicit:
        if key and key not in known:
            near = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
            top = [n for n, _ in model.named_children()]
            inner = [f"{t}.{c}" for t in top for c, _ in model.get_submodule(t).named_children()][:8]
            hint = f"did you mean {', '.join(near)}? " if near else ""
            raise LoadError(f"device_map key {key!r} is not a module of this {config.model_type} model; {hint}"
                            f"module names look like {', '.join(top + inner)} (see model.named_modules())")
    tops = _uncovered_tops(model, explicit)
    if tops and DEFAULT_KEY in device_map:
        explicit.update({t: device_map[DEFAULT_KEY] for t in tops})
    elif tops:
        shown = ", ".join(tops[:6]) + (f", ... {len(tops) - 6} more" if len(tops) > 6 else "")
        raise LoadError(f"device_map gives no device to {shown}; name them, or add \"*\": DEVICE for every "
                        "module not named, or use device_map='auto'")
    if getattr(config, "tie_word_embeddings", False):
        where = {}
        for role, module in (("input embedding", model.get_input_embeddings()), ("output embedding", model.get_output_embeddings())):
            name = next((n for n, m in model.named_modules() if m is module), None)
            if name is not None:
                where[role] = next((v for k, v in sorted(explicit.items(), key=lambda kv: -len(kv[0]))
                                    if _covered(name, [k])), None), name
        if len(where) == 2 and where["input embedding"][0] != where["output embedding"][0]:
            (a, na), (b, nb) = where["input embedding"], where["output embedding"]
            raise LoadError(f"this model ties its input and output embeddings ({na} and {nb} share one weight), "
                            f"so both must be on one device; the device_map puts them on {a!r} and {b!r}")
    return explicit
