"""Shared helpers: random GPT-2-shaped models, interleaved timing, peak-memory deltas.

Peak memory is the increase of the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs``) over its resident set just before the call, in MiB; whatever the
call returns is kept alive until the peak is read, so a cache counts.

glibc's ``mmap`` threshold decides whether a large allocation comes from the heap or from a
fresh mapping (page faults on first touch, returned to the OS on free). Benchmarks that report
memory pin it low (``mmap_threshold(SMALL_MMAP)``) so that freed tensors return to the OS
between measurements; timing-only ones pin it at glibc's adaptive ceiling
(``LARGE_MMAP``, where a long-running process's threshold ends up once it has freed a large
block), so that no method pays page faults a user's process would not.
"""

from __future__ import annotations

import copy
import ctypes
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

VOCAB = 50257
ROOT = Path(__file__).resolve().parent.parent

SMALL_MMAP = 128 * 1024  # glibc's initial threshold
LARGE_MMAP = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
_M_MMAP_THRESHOLD = -3

try:
    _LIBC = ctypes.CDLL("libc.so.6")
except OSError:
    _LIBC = None


def mmap_threshold(size: int) -> None:
    """Pin glibc's ``mmap`` threshold (a no-op without glibc)."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, size)
        _LIBC.malloc_trim(0)


mmap_threshold(SMALL_MMAP)


def gpt2_model(n_layer: int, n_embd: int, n_head: int, seed: int = 0) -> transformers.GPT2LMHeadModel:
    """A random-init GPT-2-shaped model (vocab 50257), eval mode, fp32."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=VOCAB)
    return transformers.GPT2LMHeadModel(config).eval()


def word_tokenizer(folder: Path) -> transformers.PreTrainedTokenizerFast:
    """A two-word tokenizer saved to ``folder`` (TransformerLens wants one; inputs are ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "the": 1}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", pad_token="<unk>", bos_token="<unk>", eos_token="<unk>")
    fast.save_pretrained(folder)
    return transformers.AutoTokenizer.from_pretrained(folder)


def bridge_of(model):
    """A TransformerLens 4.x ``TransformerBridge`` over a *copy* of ``model`` (booting
    replaces the HF submodules in place, which would change the other methods' model)."""
    from transformer_lens.model_bridge import TransformerBridge

    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        folder = Path(tmp)
        model.config.save_pretrained(folder)
        return TransformerBridge.boot_transformers(str(folder), hf_model=copy.deepcopy(model), tokenizer=word_tokenizer(folder))


def tl3_python() -> Path | None:
    """The TransformerLens 3.9 interpreter (``make bench`` builds ``.venv-tl3``), if any."""
    for candidate in (ROOT / ".venv-tl3/bin/python", Path("/tmp/tl39/bin/python")):
        if candidate.exists():
            return candidate
    return None


ROUND_SECONDS = 1.0  # timing-only rounds: timed calls per method per round fill about this long
MAX_CALLS = 10


def interleaved(methods: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                results: dict[str, object] | None = None, memory: bool = True,
                ) -> tuple[dict[str, list[float]], dict[str, float | None]]:
    """Seconds per timed call of each method, and its median peak-memory increase (MiB).

    Rounds run every method once, in turn, so the noise of a shared machine spreads evenly
    over the methods. Pass a dict as ``results`` to get each method's last return value.
    With ``memory=False`` (timing only) no peak is measured and each method's turn in a round
    starts with an untimed call, so that no method is timed in the cache and allocator state
    the previous method left behind; then come as many timed calls as fit ``ROUND_SECONDS``
    (at least one, at most ``MAX_CALLS``), so that fast methods, whose single calls are noisy
    on a shared machine, get a median over many calls.
    """
    times: dict[str, list[float]] = {name: [] for name in methods}
    peaks: dict[str, list[float]] = {name: [] for name in methods}
    last = results if results is not None else {}
    for round_ in range(warmup + repeats):
        for name, fn in methods.items():
            last.pop(name, None)
            if memory:
                seconds, peak, value = measure(fn)
                samples = [seconds]
            else:
                warm, _, _ = _time(fn)
                calls = max(1, min(MAX_CALLS, int(ROUND_SECONDS / max(warm, 1e-6))))
                samples, peak = [], None
                for _ in range(calls):
                    seconds, _, value = _time(fn)
                    samples.append(seconds)
            if results is not None:
                last[name] = value
            del value
            if round_ >= warmup:
                times[name].extend(samples)
                if peak is not None:
                    peaks[name].append(peak)
    return times, {name: statistics.median(p) if p else None for name, p in peaks.items()}


def _time(fn: Callable[[], object]) -> tuple[float, None, object]:
    start = time.perf_counter()
    with torch.no_grad():
        result = fn()
    if torch.cuda.is_available():  # GPU kernels run asynchronously: time them to their end
        torch.cuda.synchronize()
    return time.perf_counter() - start, None, result


def baseline(times: dict[str, list[float]], name: str) -> tuple[str, float]:
    """``(name, median seconds)``: the baseline argument of ``row``."""
    return name, statistics.median(times[name])


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])  # kB
    raise RuntimeError(f"{field} missing from /proc/self/status")


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(fn: Callable[[], object]) -> tuple[float, float | None, object]:
    """``(seconds, peak MiB increase, result)`` of one ``fn()`` under ``no_grad``; the peak
    is ``None`` where Linux's ``/proc`` peak reset is unavailable."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    can_peak = _reset_peak()
    before = _status("VmRSS") if can_peak else 0
    start = time.perf_counter()
    with torch.no_grad():
        result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (_status("VmHWM") - before) / 1024 if can_peak else None
    return seconds, peak, result


def row(benchmark: str, setting: str, method: str, seconds: list[float] | None, baseline: tuple[str, float] | None,
        peak: float | None = None, note: str = "") -> dict:
    """One table row; ``ratio`` is the median over the baseline's (``(name, median)``)."""
    median = statistics.median(seconds) if seconds else None
    base_name, base = baseline if baseline else (None, None)
    return {
        "benchmark": benchmark, "setting": setting, "method": method, "baseline": base_name,
        "median_s": median, "ratio": (median / base) if median is not None and base else None,
        "peak_mib": peak, "repeats": len(seconds or []), "times_s": seconds or [], "note": note,
    }
