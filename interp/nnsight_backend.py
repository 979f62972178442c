"""The nnsight backend: the toolkit's one forward primitive run as an nnsight trace, here or on NDIF.

``interp.load(name, backend="nnsight", remote=False | True)`` returns an ``NNsightLM``. Every
forward of the toolkit is an ``interp.forward`` plan (mask, position ids, cache, hooks,
columns, where to stop); ``NNsightLM.execute`` runs it as one ``model.trace(...)``: the
session's taps (``interp.hooks.HookSession.taps``, the same functions the PyTorch hooks call,
so the same numbers) are read and written in execution order through the nnsight envoys, and
only what the plan keeps is saved (captures at the kept columns, logits at the unembedded
columns): NDIF's advice of saving only reduced values. A patching chunk (many patched copies
of a batch) is one trace, so a sweep is a few requests.

``remote=True`` sends the same traces to NDIF (``NDIF_API_KEY`` or nnsight's saved key). What
cannot run there raises ``RemoteUnsupported`` naming the feature and what to use instead:
the key/value cache, packed rows, gradients, attention patterns. The patching sweep takes its
full-length path there by itself, and multiple-choice scoring its one-sequence-per-option path
(the same numbers). The lens and direct attribution apply the final norm and unembedding here:
off NDIF, their weights are fetched once by a trace.

``remote="local"`` is nnsight's dry run of the remote path: NDIF's rules, and each trace
serialized as for NDIF, deserialized with our modules hidden, and run here on the local
weights (a study that passes it will run on NDIF).
"""

from __future__ import annotations

import copy
import os

import torch

from interp.errors import InterpError, LoadError
from interp.forward import Forward, Pass, torch_pass
from interp.model import LM

# How to see the models NDIF hosts (error messages name it).
HOSTED = ("python -c 'import nnsight; print(nnsight.status())' (or https://nnsight.net/status/)")
KEY_HELP = ("set NDIF_API_KEY=<your key> in the environment, or save it once with "
            "python -c 'from nnsight import CONFIG; CONFIG.set_default_api_key(\"<your key>\")' "
            "(a free key: https://login.ndif.us)")
REMOTES = (False, True, "local")
# Whose functions a trace may carry (interventions written in a study, say).
OUR_PACKAGES = ("interp", "probes", "tasks", "studies", "toy_pair")


class RemoteUnsupported(InterpError):
    """A feature an NDIF (``remote=True``) run cannot do."""


def remote_unsupported(feature: str, instead: str) -> RemoteUnsupported:
    return RemoteUnsupported(f"{feature} cannot run on NDIF (remote=True): {instead}")


def api_key() -> str | None:
    """The NDIF key nnsight would send: ``NDIF_API_KEY``, else nnsight's saved config."""
    from nnsight import CONFIG

    return os.environ.get("NDIF_API_KEY") or CONFIG.API.APIKEY or None


def hosted_models() -> list[str]:
    """Repo ids NDIF serves right now (``nnsight.status``); LoadError if NDIF cannot be reached."""
    from nnsight import ndif

    try:
        deployments = ndif._get("/status").get("deployments", {})
    except Exception as err:  # httpx errors, JSON errors: all mean "no list"
        raise LoadError(f"could not reach NDIF to see which models it hosts ({type(err).__name__}: {err}); "
                        f"check the connection, or see {HOSTED}") from None
    return sorted({d.get("repo_id") for d in deployments.values() if d.get("repo_id")})


def check_remote(repo_id: str) -> None:
    """Raise LoadError unless a key is set and NDIF hosts ``repo_id`` (before any trace is built)."""
    if not api_key():
        raise LoadError(f"remote=True sends traces to NDIF, which needs an API key: {KEY_HELP}")
    hosted = hosted_models()
    if repo_id not in hosted:
        shown = ", ".join(hosted[:12]) + (f", ... {len(hosted) - 12} more" if len(hosted) > 12 else "")
        raise LoadError(f"NDIF does not host {repo_id!r} (hosted now: {shown or 'none'}); "
                        f"see the hosted models with {HOSTED}, or run it here with remote=False")


def wrap(model, tokenizer):
    """``model`` (an HF causal LM) behind an nnsight envoy: nnsight's transformers wrapper, whose
    remote key names the hub id, or without a tokenizer (which that one needs) the plain one."""
    from nnsight import NNsight
    from nnsight.modeling.transformers import TransformersModel

    if tokenizer is None:
        return NNsight(model)
    return TransformersModel(model, tokenizer=tokenizer, task="text-generation")


class NNsightLM(LM):
    """An ``LM`` whose forwards are nnsight traces (``remote``: on NDIF). Build with
    ``interp.load(name, backend="nnsight", remote=...)`` or ``NNsightLM(model, tokenizer)``.

    With ``remote=True``, ``model`` is nnsight's meta-device copy (no weights): its config and
    module tree name what the trace reads; NDIF runs it on the hosted weights.
    """

    backend = "nnsight"

    def __init__(self, model, tokenizer=None, name: str | None = None, remote: bool | str = False, envoy=None):
        if remote not in REMOTES:
            raise InterpError(f"remote must be one of {', '.join(map(repr, REMOTES))}, got {remote!r}")
        super().__init__(model, tokenizer, name)
        self.remote = remote
        self.envoy = envoy if envoy is not None else wrap(model, tokenizer)
        self._fetched: tuple[torch.nn.Module, torch.nn.Module] | None = None

    def __repr__(self) -> str:
        where = {False: "local", True: "NDIF", "local": "NDIF dry run"}[self.remote]
        return super().__repr__()[:-1] + f", nnsight {where})"

    @property
    def local_modules(self) -> bool:
        """Whether this process runs the model, so that code may hook or swap its modules (not on
        NDIF, nor in its dry run, which keeps NDIF's rules)."""
        return self.remote is False

    @property
    def final_norm(self) -> torch.nn.Module:
        return self._head()[0]

    @property
    def unembed(self) -> torch.nn.Module:
        return self._head()[1]

    def _head(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """The final norm and the unembedding, which the lens, direct attribution and the
        deferred unembedding apply here: this process's modules, or off NDIF local copies,
        their weights fetched by one trace (a vocab x d_model matrix: ~0.5 GB for a 7B model)."""
        if self.local_modules:
            return super().final_norm, super().unembed
        if self._fetched is None:
            paths = (self.arch.final_norm, self.arch.unembed)
            self._fetched = tuple(_local_copy(self.model.get_submodule(p), state)
                                  for p, state in zip(paths, fetch_states(self, paths)))
        return self._fetched

    def execute(self, plan: Pass) -> Forward:
        session = plan.session
        patterns = any(t.kind.startswith("pattern") for t in session.taps())
        if patterns and self.local_modules:
            # The softmax is read with a torch function mode around the attention, which a trace's
            # worker thread cannot install: the local weights run it with PyTorch hooks (same numbers).
            return torch_pass(self, plan)
        if not self.local_modules:
            _check_remote_plan(plan, patterns)
        return trace_pass(self, plan)


def _check_remote_plan(plan: Pass, patterns: bool) -> None:
    if patterns:
        raise remote_unsupported("attn.hook_pattern (attention probabilities, read inside the attention)",
                                 "capture attn.hook_q and attn.hook_k and compute the pattern, or use backend='torch'")
    if plan.past is not None:
        raise remote_unsupported(
            "a key/value cache (run(use_cache=True), run_continuation, score_items(method='kv'), "
            "patch_sweep(kv_prefix=True))",
            "the cache stays on NDIF's GPU; use score_items(method='naive') (patch_sweep turns kv_prefix off itself)")
    if plan.attention.ndim != 2:
        raise remote_unsupported("packed rows (a custom 4-D attention mask, interp.packed)",
                                 "the hosted model's attention implementation need not take one; run each "
                                 "continuation as its own prompt (e.g. score_items(method='naive'))")
    if plan.grad:
        raise remote_unsupported("gradients (grad=True, attribution patching)",
                                 "use exact activation patching (patch_sweep), or backend='torch'")


def envoy_at(root, path: str):
    """The envoy of the module at dotted ``path`` (``"model.layers.3.mlp"``) under ``root``."""
    for part in path.split("."):
        root = root[int(part)] if part.isdigit() else getattr(root, part)
    return root


def trace_pass(lm: NNsightLM, plan: Pass) -> Forward:
    """``plan`` as one nnsight trace of ``lm.envoy`` (on NDIF with ``lm.remote``)."""
    kwargs = {"input_ids": plan.ids, "attention_mask": plan.attention, "position_ids": plan.position_ids}
    if plan.past is not None:
        kwargs.update(cache=plan.past, use_cache=True)
    else:
        kwargs["use_cache"] = False
    arch = lm.arch
    last_mlp = f"{arch.blocks}.{lm.n_layers - 1}.{arch.mlp}"
    envoy = lm.envoy
    if lm.remote:
        _prepare_remote()
    with torch.set_grad_enabled(plan.grad):
        with envoy.trace(remote=lm.remote, **kwargs) as tracer:
            found = nnsight_save({})  # saved first: a pass that stops early keeps it too
            walk(envoy, tracer, plan, arch.unembed, last_mlp, found)
    logits = found.get("logits")
    return Forward(logits, found.get("captures", {}), found.get("hidden"), plan.past, plan.cols)


def nnsight_save(value):
    from nnsight import save

    return save(value)


def walk(root, tracer, plan: Pass, unembed: str, last_mlp: str, found: dict) -> None:
    """The trace's body: each tap at its module in execution order (its function's return value
    written back), then the unembedding's input at the kept columns and the logits, into
    ``found`` (``captures``, ``hidden``, ``logits``); the model stops where the plan ends."""
    session = plan.session
    found["captures"] = session.cache
    for tap in session.taps():
        envoy = envoy_at(root, tap.path)
        if tap.kind == "post":
            new = tap.fn(None, None, envoy.output)
            if new is not None:
                envoy.output = new
        elif tap.kind == "pre":
            args, kwargs = envoy.inputs
            new = tap.fn(None, args)
            if new is not None:
                envoy.inputs = (new, kwargs)
        else:  # pre_kwargs: a block's input, positional or by keyword
            args, kwargs = envoy.inputs
            new = tap.fn(None, args, kwargs)
            if new is not None:
                envoy.inputs = new
        if tap.stop:
            tracer.stop()
    if plan.end == "last_mlp":
        envoy_at(root, last_mlp).input  # noqa: B018 -- reached: the final block's attention has run
        tracer.stop()
    head = envoy_at(root, unembed)
    args, kwargs = head.inputs
    h = plan.unembed_input(args[0])
    if plan.keeps_hidden:
        found["hidden"] = h if plan.grad else h.detach()
    if plan.end == "unembed":
        tracer.stop()
    if h is not args[0]:
        head.inputs = ((h,) + tuple(args[1:]), kwargs)
    found["logits"] = plan.kept_logits(root.output.logits)


def fetch_states(lm: NNsightLM, paths: tuple[str, ...]) -> list[dict]:
    """The ``state_dict`` of the modules at ``paths``, read by one trace (of one token, stopped
    at once) where the model runs."""
    if lm.remote:
        _prepare_remote()
    envoy = lm.envoy
    with envoy.trace(input_ids=torch.zeros(1, 1, dtype=torch.long), remote=lm.remote) as tracer:
        states = nnsight_save([])
        read_states(envoy, tracer, paths, states)
    return states


def read_states(root, tracer, paths: tuple[str, ...], states: list) -> None:
    """The trace's body of ``fetch_states``: copies of each module's tensors, then stop."""
    for path in paths:
        module = envoy_at(root, path)._module
        states.append({k: v.detach().clone() for k, v in module.state_dict().items()})
    tracer.stop()


def _local_copy(meta: torch.nn.Module, state: dict) -> torch.nn.Module:
    """A copy of ``meta`` (a module of nnsight's weightless model) holding ``state``, on the CPU."""
    module = copy.deepcopy(meta).to_empty(device="cpu")
    module.load_state_dict(state)
    return module.eval()


def _prepare_remote() -> None:
    """Our packages' code travels with each request by value (NDIF has not installed them, and
    nnsight ships by value only what is not pip-installed, as an editable install of ours is),
    and the request carries ``NDIF_API_KEY`` as it is now (nnsight read it once, at import)."""
    from nnsight import CONFIG, register

    for package in OUR_PACKAGES:
        register(package)
    if os.environ.get("NDIF_API_KEY"):
        CONFIG.API.APIKEY = os.environ["NDIF_API_KEY"]


def load_remote(repo_id: str, tokenizer=None) -> NNsightLM:
    """An ``NNsightLM`` of the NDIF-hosted ``repo_id``: the key and NDIF's list are checked
    first, then nnsight builds the model on the meta device (config and tokenizer from the hub)."""
    check_remote(repo_id)
    from nnsight.modeling.transformers import TransformersModel

    try:
        envoy = TransformersModel(repo_id, task="text-generation")
    except (OSError, ValueError) as err:
        raise LoadError(f"could not read {repo_id!r}'s config and tokenizer from the hub ({type(err).__name__}); "
                        "a gated model (Llama) needs its licence accepted and `huggingface-cli login`") from err
    return NNsightLM(envoy._module, envoy.tokenizer, name=repo_id, remote=True, envoy=envoy)
