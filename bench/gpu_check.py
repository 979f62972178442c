"""``python -m bench.gpu_check``: the GPU check, one command, a few minutes on one GPU.

It measures, and prints as it goes (and writes ``bench/gpu_check.json``):

1. **quantized loading** (bitsandbytes 4-bit NF4 and 8-bit) of a random-init Llama
   (``LAYERS`` x ``WIDTH``, widths divisible by 64 as bnb's kernels want): (a) *exactness of the
   toolkit on the quantized model*: our captures against the same quantized model's own HF
   forward (``output_hidden_states``), and our patching sweep against a loop of single patched
   runs, both to ``BF16_TOL`` relative (bf16 compute: 8 mantissa bits, ~4e-3 per rounding, and
   batched against single runs sum in other orders); (b) *quantization error against bf16*
   (informational: the weights themselves differ, NF4 has 16 levels per block of 64): the
   captures' relative error and the sweep's correlation with the bf16 sweep, flagged below
   ``MIN_CORR``;
2. **``device_map``**: ``"auto"`` (one GPU: all on ``cuda:0``; two or more: ``"balanced"``
   over them) and a map with every other block offloaded to the CPU, against the
   single-device float32 run: captures, logits and a patching sweep to 1e-5;
3. **benchmarks on the GPU**: ``bench.capture`` and ``bench.patching``'s minimal pair, their
   ratios against a bare HF forward / TransformerLens 4.3's bridge, as ``python -m bench``
   reports them on CPU.

Without a CUDA GPU it prints this plan and exits with status 2. ``--device cpu --dry-run`` runs
what needs no GPU (part 2 with disk instead of GPU offload, part 3 at tiny sizes) and says so:
that is what ``tests/test_gpu_check.py`` runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

OUT = Path(__file__).with_name("gpu_check.json")
LAYERS, WIDTH, HEADS, FFN, VOCAB = 4, 512, 8, 1408, 4096
TINY = dict(LAYERS=2, WIDTH=64, HEADS=4, FFN=128, VOCAB=256)
BF16_TOL = 2e-2  # relative, ours vs the same quantized model (see the module docstring)
EXACT_TOL = 1e-5  # float32, across devices
MIN_CORR = {"4bit": 0.9, "8bit": 0.97}  # quantized sweep vs bf16 sweep (informational flag)
SEQ = 12


def plan() -> str:
    return __doc__.split("It measures, and prints as it goes (and writes ``bench/gpu_check.json``):")[1].split(
        "Without a CUDA GPU")[0].strip()


def _bnb() -> str | None:
    try:
        return version("bitsandbytes")
    except PackageNotFoundError:
        return None


def _llama(folder: Path, sizes: dict, seed: int = 0) -> Path:
    """A random-init Llama saved (float32, untied) with a word tokenizer; returns the folder."""
    import transformers

    from bench.common import word_tokenizer

    torch.manual_seed(seed)
    config = transformers.LlamaConfig(num_hidden_layers=sizes["LAYERS"], hidden_size=sizes["WIDTH"],
                                      num_attention_heads=sizes["HEADS"], num_key_value_heads=sizes["HEADS"] // 2,
                                      intermediate_size=sizes["FFN"], vocab_size=sizes["VOCAB"],
                                      max_position_embeddings=64, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).eval()
    with torch.no_grad():  # random norms, so a skipped norm would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    word_tokenizer(folder)
    return folder


def _prompts(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    clean = torch.randint(0, vocab, (2, SEQ))
    corrupted = clean.clone()
    corrupted[:, 4] = (clean[:, 4] + 1) % vocab
    return corrupted, clean


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float().cpu(), b.float().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def _metric(a: int = 1, b: int = 2):
    from interp.patching.metrics import logit_diff

    return logit_diff(a, b)


def _loop_sweep(lm, corrupted, clean, metric) -> torch.Tensor:
    """The oracle sweep: one plain ``lm.run`` per cell, replacing ``resid_pre`` there."""
    import interp

    acts = lm.run(clean, capture="resid_pre").cache
    out = torch.empty(lm.n_layers, corrupted.shape[1])
    for layer in range(lm.n_layers):
        name = f"blocks.{layer}.hook_resid_pre"
        for pos in range(corrupted.shape[1]):
            value = acts[name][:, pos:pos + 1]
            logits = lm.run(corrupted, positions=-1, interventions={name: interp.replace(value, positions=[pos])}).logits
            out[layer, pos] = float(metric(logits[:, 0].float()))
    return out


def check_quantized(folder: Path, device: str) -> list[dict]:
    import interp

    rows = []
    if _bnb() is None:
        return [{"part": "quantized", "status": "skipped",
                 "note": "bitsandbytes is not installed: pip install -e '.[quant]' (the pyproject 'quant' extra)"}]
    corrupted, clean = _prompts(interp.load(str(folder), device="cpu").d_vocab)
    metric = _metric()
    ref = interp.load(str(folder), dtype="bfloat16", device=device)
    ref_sweep = interp.patching.patch_sweep(ref, corrupted, clean, metric)
    ref_cache = ref.run(corrupted, capture="resid_post").cache
    del ref
    for quantization in ("4bit", "8bit"):
        lm = interp.load(str(folder), quantization=quantization)
        run = lm.run(corrupted, capture="resid_post")
        with torch.no_grad():
            hf = lm.model(input_ids=corrupted.to(lm.device), output_hidden_states=True)
        # hidden_states[l + 1] is block l's output (the last one after the final norm: skipped)
        own = max(_rel(run.cache[f"blocks.{l}.hook_resid_post"], hf.hidden_states[l + 1]) for l in range(lm.n_layers - 1))
        own = max(own, _rel(run.logits, hf.logits))
        sweep = interp.patching.patch_sweep(lm, corrupted, clean, metric)
        loop = _loop_sweep(lm, corrupted, clean, metric)
        sweep_err = float((sweep - loop).abs().max() / loop.abs().max().clamp_min(1e-12))
        vs_bf16 = max(_rel(run.cache[n], ref_cache[n]) for n in ref_cache.keys())
        corr = float(torch.corrcoef(torch.stack([sweep.flatten().float(), ref_sweep.flatten().float()]))[0, 1])
        ok = own <= BF16_TOL and sweep_err <= BF16_TOL
        rows.append({"part": "quantized", "setting": quantization, "status": "pass" if ok else "FAIL",
                     "ours_vs_same_model_rel": own, "sweep_vs_loop_rel": sweep_err, "tolerance": BF16_TOL,
                     "captures_vs_bf16_rel": vs_bf16, "sweep_corr_vs_bf16": corr,
                     "note": "" if corr >= MIN_CORR[quantization] else f"sweep correlation with bf16 below {MIN_CORR[quantization]}"})
        del lm
    return rows


def _device_maps(device: str, n_layers: int, offload: Path) -> dict[str, tuple[object, dict]]:
    """name -> (device_map, extra load options) to compare with the single-device run."""
    if device == "cpu":  # no GPU: disk offload is the part that runs (every other block)
        disk = {f"model.layers.{i}": "disk" for i in range(1, n_layers, 2)}
        return {"every other block on disk": ({**disk, "*": "cpu"}, {"offload_folder": offload})}
    gpus = torch.cuda.device_count()
    cpu = {f"model.layers.{i}": "cpu" for i in range(1, n_layers, 2)}
    maps = {"auto": ("auto" if gpus == 1 else "balanced", {}),
            "every other block offloaded to the CPU": ({**cpu, "*": 0}, {})}
    if gpus >= 2:
        maps["blocks split over cuda:0 and cuda:1"] = (
            {**{f"model.layers.{i}": i * 2 // n_layers for i in range(n_layers)}, "*": 0}, {})
    return maps


def check_device_maps(folder: Path, device: str) -> list[dict]:
    import interp

    ref = interp.load(str(folder), device=device)
    corrupted, clean = _prompts(ref.d_vocab)
    metric = _metric()
    names = ["resid_post", "mlp_out"]
    want = ref.run(corrupted, capture=names)
    want_sweep = interp.patching.patch_sweep(ref, corrupted, clean, metric)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-offload-") as offload:
        for name, (device_map, extra) in _device_maps(device, ref.n_layers, Path(offload)).items():
            lm = interp.load(str(folder), device_map=device_map, capture_device="cpu", **extra)
            got = lm.run(corrupted, capture=names)
            where = {str(t.device) for t in got.cache.values()} | {str(got.logits.device)}
            diff = max([float((got.cache[n] - want.cache[n].cpu()).abs().max()) for n in want.cache.keys()]
                       + [float((got.logits - want.logits.cpu()).abs().max())])
            sweep_diff = float((interp.patching.patch_sweep(lm, corrupted, clean, metric) - want_sweep).abs().max())
            ok = diff <= EXACT_TOL and sweep_diff <= EXACT_TOL and where == {"cpu"}
            rows.append({"part": "device_map", "setting": name, "status": "pass" if ok else "FAIL",
                         "map": str(getattr(lm.model, "hf_device_map", device_map)), "captures_max_abs": diff,
                         "sweep_max_abs": sweep_diff, "tolerance": EXACT_TOL, "captures_on": sorted(where)})
            del lm
    return rows


def bench_rows(device: str, tiny: bool) -> list[dict]:
    from bench import capture, patching

    from bench import common

    saved = common.ROUND_SECONDS, common.MAX_CALLS
    if tiny:  # a test of the code path, not a measurement: one call per timing round
        common.ROUND_SECONDS, common.MAX_CALLS = 0.0, 1
    try:
        if tiny:
            rows = capture.run(True, device, shape=(2, 64, 4), shapes=[(1, 8)])
        else:
            rows = capture.run(False, device, shapes=[(1, 16), (8, 128), (32, 512)])
        rows += patching.run(tiny, device, cases="main", shape=(2, 64, 4) if tiny else (4, 256, 8))
    finally:
        common.ROUND_SECONDS, common.MAX_CALLS = saved
    return [{"part": "benchmark", **r} for r in rows]


def _print(rows: list[dict]) -> None:
    for r in rows:
        if r["part"] == "benchmark":
            ratio = "" if r.get("ratio") is None else f"{r['ratio']:.2f}x {r['baseline']}"
            print(f"  {r['benchmark']:9} {r['setting']:55} {r['method']:48} {1e3 * (r['median_s'] or 0):9.2f} ms  {ratio}")
        else:
            shown = {k: (f"{v:.2e}" if isinstance(v, float) else v) for k, v in r.items() if k not in ("part",)}
            print(f"  {r['part']}: {shown}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:i, or cpu with --dry-run")
    p.add_argument("--dry-run", action="store_true",
                   help="with --device cpu: run the parts that need no GPU, at tiny sizes (a test of this script)")
    p.add_argument("--out", default=str(OUT), help=f"JSON file of the results (default {OUT})")
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        print(f"error: no CUDA GPU on this machine (torch {torch.__version__}, cuda available: False), so nothing "
              f"was measured. On a GPU machine `python -m bench.gpu_check` measures:\n{plan()}\n"
              f"bitsandbytes: {_bnb() or 'not installed (pip install -e .[quant])'}. "
              "To exercise the parts that run on a CPU: python -m bench.gpu_check --device cpu --dry-run", file=sys.stderr)
        return 2
    if not gpu and not args.dry_run:
        print("error: --device cpu measures nothing about GPUs; add --dry-run to test this script's CPU parts",
              file=sys.stderr)
        return 2
    start = time.perf_counter()
    what = (f"GPU {torch.cuda.get_device_name(args.device)} x {torch.cuda.device_count()}" if gpu
            else "DRY RUN on the CPU at tiny sizes: no GPU was measured; quantization skipped (bitsandbytes needs CUDA)")
    print(f"gpu_check: {what}; torch {torch.__version__}, bitsandbytes {_bnb() or 'not installed'}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        folder = _llama(Path(tmp), TINY if args.dry_run else dict(LAYERS=LAYERS, WIDTH=WIDTH, HEADS=HEADS, FFN=FFN, VOCAB=VOCAB))
        parts = [("quantized", lambda: check_quantized(folder, args.device) if gpu else
                  [{"part": "quantized", "status": "skipped", "note": "bitsandbytes 4/8-bit needs a CUDA GPU"}]),
                 ("device_map", lambda: check_device_maps(folder, args.device)),
                 ("benchmark", lambda: bench_rows(args.device, tiny=args.dry_run))]
        for name, part in parts:
            print(f"[{name}]")
            new = part()
            _print(new)
            rows += new
    failed = [r for r in rows if r.get("status") == "FAIL"]
    record = {"measured_on": what, "dry_run": args.dry_run, "device": args.device, "seconds": time.perf_counter() - start,
              "torch": torch.__version__, "bitsandbytes": _bnb(), "rows": rows}
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"{'FAILED: ' + str(len(failed)) + ' checks' if failed else 'all checks passed'}; "
          f"{what}; wrote {args.out} in {record['seconds']:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
