"""Inference speed of LSeg: images/s, peak memory and the FLOP-efficiency target, in one run.

Rows (per image size and batch size):

* ``official``  - what the official code does per call: labels re-tokenized and re-encoded, explicit
  softmax attention, every ViT block and the final norm, the decoder in its op order (fp32, eager);
* ``reference`` - our model with every fast path off (the plain fp32 eager path, cached labels);
* ``fast``      - our default fast paths, per ``--dtype`` (autocast) and ``--compile`` setting.

Every row reports images/s, peak memory (CPU: peak RSS of this process during the row; CUDA:
``max_memory_allocated``), its speed-up over ``reference`` and ``official``, and the largest logit
difference from the fp32 ``reference`` output on the same input.

The target section (``--no-target`` skips it) counts FLOPs with ``torch.utils.flop_counter`` for the
official-like forward and for ours, times ours (batch 1, first size, cached labels) interleaved with
a plain 4096x4096 fp32 matmul, and prints ``(official FLOPs / our time) / matmul FLOP rate``: the
fraction of the machine's matmul rate at which we deliver the official forward's work.

``--ablation`` measures each fast path alone instead (first ``--size``/``--batch``/``--dtype``):
``leave-one-out`` (default) times the default paths with one path off, ``alone`` times the reference
with one path on. Each round times every path next to its own baseline call (the order alternating
between rounds, so load changes hit both sides alike); the ratio ``time(path off) / time(path on)``
of each pair is recorded and the median over ``--iters`` rounds is printed. ``--flops`` also counts
each configuration's FLOPs on fake tensors (shapes only, no arithmetic). ``--ablation-scope parts``
times only the part of the forward that a path changes (one ViT block, times the number a forward
runs; or everything after the blocks) and adds the unchanged rest, timed in the same round: far
cheaper on a slow or busy CPU.

    python benchmarks/bench_inference.py                                  # CI size: lseg_tiny
    python benchmarks/bench_inference.py --variant lseg_vitl16_384 --size 480 --iters 3
    python benchmarks/bench_inference.py --device cuda --variant lseg_vitl16_384 --size 480 \\
        --batch 1 8 32 --dtype fp32 bf16 --compile both
    python benchmarks/bench_inference.py --ablation --variant lseg_vitl16_384 --size 480 --batch 1 --iters 3
    python benchmarks/bench_inference.py --ablation --ablation-scope parts --paths fused_attn ... (CPU)
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

import langseg
from langseg.accel import CompiledLSeg, autocast, channels_last
from langseg.models import FastPaths, LSeg, create_model

LABELS = ["dog", "grass", "sky", "other", "building", "person", "road", "tree"]


# ------------------------------------------------------------------------------ machine
def machine_info(device: torch.device) -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "langseg": getattr(langseg, "__version__", "?"),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_start": os.getloadavg(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda
        )
    return info


def _cpu_model() -> str:
    """``model name`` from /proc/cpuinfo, with the family/model numbers (VMs often hide the name)."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():  # the first processor is enough
                break
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name


# ------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory over a block: CUDA allocator peak, or this process's peak RSS (Linux)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mib: float | None = None  # process peak (CPU: RSS, weights included)
        self.added_mib: float | None = None  # peak above the level when the block started
        self._start_mib = 0.0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start_mib = torch.cuda.memory_allocated(self.device) / 2**20
        else:
            self._start_mib = _status_kib("VmRSS:") / 1024
            try:  # "5" resets the peak RSS (VmHWM) of this process
                Path("/proc/self/clear_refs").write_text("5")
            except OSError:
                pass
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            kib = _status_kib("VmHWM:") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
            self.peak_mib = kib / 1024
        self.added_mib = self.peak_mib - self._start_mib


def _status_kib(field: str) -> int:
    """A ``kB`` field of /proc/self/status (0 where there is none)."""
    try:
        return int(Path("/proc/self/status").read_text().split(field)[1].split()[0])
    except (OSError, IndexError, ValueError):
        return 0


# ------------------------------------------------------------------------------ forwards
def official_forward(model: LSeg, images: torch.Tensor, labels: list[str]) -> torch.Tensor:
    """The official per-call work. The model must be in ``FastPaths.reference()`` mode."""
    tokens = model.text_encoder.tokenize(labels).to(images.device)  # re-tokenized every call
    text = F.normalize(model.text_encoder(tokens).float(), dim=-1)  # re-encoded every call
    enc = model.image_encoder
    if hasattr(enc, "forward_intermediates"):
        H, W = images.shape[-2:]
        p = enc.cfg.patch_size
        grid = (H // p, W // p)
        tokens_out = enc.forward_intermediates(images)
        last = tokens_out[-1]
        for blk in enc.vit.blocks[max(enc.cfg.hooks) + 1 :]:  # blocks after the last hook still run
            last = blk(last)
        enc.vit.norm(last)  # the final norm runs; its output is discarded
        feats = [stage(t, grid) for stage, t in zip(enc.reassemble, tokens_out)]
    else:
        feats = enc(images)
    emb = model.pixel_embed(model.neck(feats))
    return model.logits_from_embeddings(emb, text)


def timed(fn: Callable[[], object], iters: int, warmup: int, device: torch.device) -> list[float]:
    """Seconds per call, ``iters`` calls after ``warmup``."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------------------------- rows
def run_rows(model: LSeg, fast: LSeg, args: argparse.Namespace, device: torch.device) -> list[dict]:
    rows: list[dict] = []
    labels = LABELS[: args.labels]
    text = model.encode_text(labels)
    for size in args.size:
        for batch in args.batch:
            g = torch.Generator().manual_seed(size * 1000 + batch)
            x = torch.randn(batch, 3, size, size, generator=g).clamp(-1, 1).to(device)
            configs: list[tuple[str, str, str]] = []  # (name, dtype, compile)
            if not args.no_official:
                configs.append(("official", "fp32", "off"))
            configs.append(("reference", "fp32", "off"))
            for dtype in args.dtype:
                for comp in ("off", "on") if args.compile == "both" else (args.compile,):
                    configs.append(("fast", dtype, comp))
            ref_out = None
            group: list[dict] = []
            for name, dtype, comp in configs:
                net = fast if name == "fast" else model
                row = run_row(net, name, dtype, comp, x, labels, text, args, device)
                with torch.inference_mode():
                    out = row.pop("_out")
                if name == "reference":
                    ref_out = out
                row["max_abs_diff_vs_reference"] = (
                    None if ref_out is None else float((out - ref_out).abs().max())
                )
                row.update(size=size, batch=batch)
                group.append(row)
                _print_row(row)
            base = {r["name"]: r["seconds"] for r in group if r["name"] in ("official", "reference")}
            for r in group:
                r["speedup_vs_reference"] = base["reference"] / r["seconds"]
                r["speedup_vs_official"] = base["official"] / r["seconds"] if "official" in base else None
            rows.extend(group)
    return rows


def run_row(model, name, dtype, comp, x, labels, text, args, device) -> dict:
    model.set_fast_paths(FastPaths.reference() if name != "fast" else FastPaths())
    net = model
    compile_s = None
    if comp == "on":
        net = CompiledLSeg(model, mode="exact", options=args.compile_options)
    if name == "official":

        def fn():
            return official_forward(model, x, labels)
    else:

        def fn():
            return net(x, text)

    with torch.inference_mode(), autocast(device, dtype):
        if comp == "on":  # the first call compiles: timed on its own
            start = time.perf_counter()
            fn()
            compile_s = time.perf_counter() - start
        with PeakMemory(device) as mem:
            times = timed(fn, args.iters, args.warmup, device)
            out = fn().float()
    model.set_fast_paths(FastPaths())
    sec = statistics.median(times)
    return {
        "name": name,
        "dtype": dtype,
        "compile": comp,
        "seconds": sec,
        "seconds_min": min(times),
        "images_per_s": x.shape[0] / sec,
        "peak_memory_mib": mem.peak_mib,
        "added_memory_mib": mem.added_mib,
        "compile_seconds": compile_s,
        "_out": out,
    }


def _print_row(r: dict) -> None:
    diff = r["max_abs_diff_vs_reference"]
    print(
        f"  {r['size']:>5} {r['batch']:>3}  {r['name']:<9} {r['dtype']:<4} compile={r['compile']:<3}"
        f"  {r['images_per_s']:9.3f} img/s  {r['seconds'] * 1000:9.1f} ms"
        f"  peak {r['peak_memory_mib']:7.0f} MiB (+{r['added_memory_mib']:.0f})"
        f"  |dlogit| {'-' if diff is None else f'{diff:.1e}'}",
        flush=True,
    )


# -------------------------------------------------------------------------------- target
def flop_count(fn: Callable[[], object]) -> tuple[int, dict[str, int]]:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    per_op = {str(k): int(v) for k, v in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops(), per_op


def matmul_rate(n: int, device: torch.device) -> Callable[[], float]:
    """A function timing one fp32 ``n x n @ n x n`` product and returning FLOP/s."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)

    def op():
        return a @ b

    op()

    def measure() -> float:
        return 2 * n**3 / timed(op, 1, 0, device)[0]

    return measure


def run_target(model: LSeg, fast: LSeg, args: argparse.Namespace, device: torch.device) -> dict:
    size, labels = args.size[0], LABELS[: args.labels]
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, 3, size, size, generator=g).clamp(-1, 1).to(device)
    text = model.encode_text(labels)
    with torch.inference_mode():
        model.set_fast_paths(FastPaths.reference())
        official_flops, official_ops = flop_count(lambda: official_forward(model, x, labels))
        official_out = official_forward(model, x, labels)
        # our algorithm's FLOPs, with attention and linears on counted (aten) kernels
        model.set_fast_paths(FastPaths(), fused_attn=False)
        our_flops, our_ops = flop_count(lambda: model(x, text))
        model.set_fast_paths(FastPaths())
        our_out = fast(x, text)
        mm = matmul_rate(args.matmul_size, device)
        ours, official, rates, official_rates = [], [], [], []
        for _ in range(args.warmup):
            fast(x, text)
        # interleaved: each forward is bracketed by two matmuls, so a change in machine load (other
        # processes) hits the forward and the rate it is compared with alike
        for _ in range(args.target_iters):
            before = mm()
            ours += timed(lambda: fast(x, text), 1, 0, device)
            after = mm()
            rates.append((before + after) / 2)
            if not args.no_official:
                model.set_fast_paths(FastPaths.reference())
                official += timed(lambda: official_forward(model, x, labels), 1, 0, device)
                model.set_fast_paths(FastPaths())
                official_rates.append((after + mm()) / 2)
    paired = [official_flops / t / r for t, r in zip(ours, rates)]
    result = {
        "size": size,
        "labels": len(labels),
        "official_gflop": official_flops / 1e9,
        "official_gflop_by_op": {k: v / 1e9 for k, v in official_ops.items()},
        "our_gflop": our_flops / 1e9,
        "our_gflop_by_op": {k: v / 1e9 for k, v in our_ops.items()},
        "max_abs_diff_vs_official": float((our_out - official_out).abs().max()),
        "our_seconds": ours,
        "official_seconds": official,
        "matmul_size": args.matmul_size,
        "matmul_gflops": [r / 1e9 for r in rates],
        "ratios": paired,
        "ratio": statistics.median(paired),
    }
    if official:
        result["official_ratio"] = statistics.median(
            official_flops / t / r for t, r in zip(official, official_rates)
        )
    return result


def _print_target(t: dict) -> None:
    print(f"\ntarget: {t['size']}x{t['size']}, batch 1, {t['labels']} cached labels, fp32")
    print(f"  FLOPs      official-like {t['official_gflop']:.1f} GFLOP   ours {t['our_gflop']:.1f} GFLOP")
    print(
        f"  matmul     {statistics.median(t['matmul_gflops']):.1f} GFLOP/s (torch.matmul {t['matmul_size']}^2)"
    )
    print(f"  time       ours {statistics.median(t['our_seconds']):.3f} s", end="")
    if t["official_seconds"]:
        print(f"   official-like {statistics.median(t['official_seconds']):.3f} s", end="")
    print(f"\n  |logits - official| max {t['max_abs_diff_vs_official']:.2e}")
    spread = f"{min(t['ratios']):.3f}..{max(t['ratios']):.3f}"
    print(
        f"  ratio      (official FLOPs / our time) / matmul rate = {t['ratio']:.3f}  (median; runs {spread})"
    )
    if "official_ratio" in t:
        print(f"  official-like forward at {t['official_ratio']:.3f} of the matmul rate")


# ------------------------------------------------------------------------------ ablation
def ablation_configs(mode: str, paths: list[str] | None = None) -> dict[str, FastPaths]:
    """``{"baseline": paths, flag: paths with that flag flipped}`` for ``leave-one-out`` or ``alone``."""
    base = FastPaths() if mode == "leave-one-out" else FastPaths.reference()
    configs = {"baseline": base}
    for name in paths or [f.name for f in dataclasses.fields(FastPaths)]:
        configs[name] = dataclasses.replace(base, **{name: not getattr(base, name)})
    return configs


def ablation_flops(model: LSeg, x: torch.Tensor, text: torch.Tensor, paths: FastPaths) -> float:
    """GFLOPs of one forward, counted on fake tensors (attention counted as explicit matmuls)."""
    counted = dataclasses.replace(paths, fused_attn=False)
    model.set_fast_paths(counted)
    counter = FlopCounterMode(display=False)
    with FakeTensorMode(allow_non_fake_inputs=True), counter:
        model(x, text)
    return counter.get_total_flops() / 1e9


# the parts of a forward each path changes (``--ablation-scope parts``)
PARTS = {
    "fused_attn": ("block",),
    "fold_bn": ("decoder",),
}


class _Fixed:
    """Within the block, ``module.<method>(...)`` returns ``value`` (an instance attribute shadows it)."""

    def __init__(self, module: torch.nn.Module, method: str, value: object) -> None:
        self.module, self.method, self.value = module, method, value

    def __enter__(self) -> None:
        setattr(self.module, self.method, lambda images: self.value)

    def __exit__(self, *exc) -> None:
        delattr(self.module, self.method)


def ablation_parts(model: LSeg, x: torch.Tensor, text: torch.Tensor) -> dict[str, tuple[Callable, int]]:
    """``{part: (call, calls per forward)}``: ``block`` one ViT block on the token sequence (a forward
    runs one per block up to the last hooked one), ``head`` everything after the blocks (readouts,
    decoder, head, logits) with the blocks' outputs given, and ``decoder``, the part of ``head`` after
    the readouts (decoder, head, logits) with the four maps given. ``block`` and ``head`` weighted
    add up to the whole forward but for the patch and position embeddings (~0.2 % of its FLOPs).
    """
    enc = model.image_encoder
    # the hooked blocks' outputs: random tokens of their shape (the parts' times do not depend on the
    # values, and running the whole trunk here would cost as much as a forward)
    g = torch.Generator().manual_seed(0)
    N = (x.shape[-2] // enc.cfg.patch_size) * (x.shape[-1] // enc.cfg.patch_size)
    shape = (x.shape[0], 1 + N, enc.cfg.embed_dim)
    tokens = [torch.randn(shape, generator=g).to(x.device) for _ in enc.cfg.hooks]

    def block() -> torch.Tensor:
        return enc._run_block(enc.vit.blocks[0], tokens[0])

    def head() -> torch.Tensor:
        with _Fixed(enc, "forward_intermediates", tokens):
            return model(x, text)

    with _Fixed(enc, "forward_intermediates", tokens):
        feats = enc(x)  # the four reassembled maps

    def decoder() -> torch.Tensor:
        with _Fixed(enc, "forward", feats):
            return model(x, text)

    return {
        "block": (block, max(enc.cfg.hooks) + 1),
        "head": (head, 1),
        "decoder": (decoder, 1),  # inside ``head``: a baseline forward adds ``block`` and ``head`` only
    }


def run_ablation(model: LSeg, args: argparse.Namespace, device: torch.device) -> dict:
    size, batch, dtype = args.size[0], args.batch[0], args.dtype[0]
    g = torch.Generator().manual_seed(size * 1000 + batch)
    x = torch.randn(batch, 3, size, size, generator=g).clamp(-1, 1).to(device)
    text = model.encode_text(LABELS[: args.labels])
    configs = ablation_configs(args.ablation, args.paths)
    names = list(configs)
    by_parts = args.ablation_scope == "parts"
    if by_parts and not hasattr(model.image_encoder, "vit"):
        raise SystemExit("bench_inference: error: --ablation-scope parts needs a ViT trunk")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    outs: dict[str, torch.Tensor] = {}  # the last output of each configuration (first part timed)

    def measure(name: str, parts: tuple[str, ...]) -> float:
        """Seconds of a forward (``parts=()``) or of its weighted ``parts``, under ``configs[name]``."""
        model.set_fast_paths(configs[name])
        calls = [(lambda: model(x, text), 1)] if not parts else [part_calls[p] for p in parts]
        total = 0.0
        for i, (fn, count) in enumerate(calls):
            start = time.perf_counter()
            out = fn()
            sync()
            total += count * (time.perf_counter() - start)
            if i == 0:
                outs[name] = out
        return total

    with torch.inference_mode(), autocast(device, dtype):
        flops = {n: ablation_flops(model, x, text, p) for n, p in configs.items()} if args.flops else {}
        model.set_fast_paths(FastPaths())  # warm-up (one call of each part timed, or one forward)
        part_calls = ablation_parts(model, x, text) if by_parts else {}
        timed_parts = {p for name in names[1:] for p in PARTS.get(name, ("head",))} if by_parts else ()
        for fn, _ in [part_calls[p] for p in timed_parts] or [(lambda: model(x, text), 1)]:
            fn()
        # each path is timed next to its own baseline call (on/off order alternating by round), so a
        # change in machine load between calls shifts both sides of a ratio alike
        forward: list[float] = []  # baseline forward (parts: the weighted sum of all parts)
        pairs: dict[str, list[tuple[float, float]]] = {name: [] for name in names[1:]}
        diffs: dict[str, float] = {}
        for r in range(args.iters):
            if by_parts:
                forward.append(measure("baseline", ("block", "head")))
            for name in names[1:]:
                parts = PARTS.get(name, ("head",)) if by_parts else ()
                sides = ("baseline", name) if r % 2 == 0 else (name, "baseline")
                t = {side: measure(side, parts) for side in sides}
                pairs[name].append((t["baseline"], t[name]))
                if not by_parts:
                    forward.append(t["baseline"])
                diffs[name] = float((outs[name].float() - outs["baseline"].float()).abs().max())
            done = " ".join(f"{n} {pairs[n][-1][0] / pairs[n][-1][1]:.3f}" for n in names[1:])
            print(
                f"  round {r + 1}/{args.iters}, time(baseline) / time(flipped), timed part: {done}",
                flush=True,
            )
    model.set_fast_paths(FastPaths())
    base = statistics.median(forward)
    rows = []
    for name in names[1:]:
        on_in_baseline = getattr(configs["baseline"], name)  # leave-one-out: the baseline has it on
        ratios, deltas = [], []
        for (t_base, t_flag), f in zip(pairs[name], forward if by_parts else [0.0] * len(pairs[name])):
            t_flag_forward = (f - t_base + t_flag) if by_parts else t_flag  # parts: the rest unchanged
            t_base_forward = f if by_parts else t_base
            on, off = (t_base_forward, t_flag_forward) if on_in_baseline else (t_flag_forward, t_base_forward)
            ratios.append(off / on)
            deltas.append(off - on)
        rows.append(
            {
                "path": name,
                "parts": list(PARTS.get(name, ("head",))) if by_parts else ["forward"],
                "pairs_seconds": pairs[name],
                "saved_seconds": statistics.median(deltas),
                "speedup": statistics.median(ratios),  # time(path off) / time(path on) of a forward
                "speedup_rounds": ratios,
                "gflop": flops.get(name),
                "max_abs_diff_vs_baseline": diffs[name],  # of the logits, or of the first part timed
            }
        )
    return {
        "mode": args.ablation,
        "scope": args.ablation_scope,
        "size": size,
        "batch": batch,
        "dtype": dtype,
        "labels": args.labels,
        "rounds": args.iters,
        "baseline_seconds": forward,
        "baseline_seconds_median": base,
        "baseline_gflop": flops.get("baseline"),
        "rows": rows,
    }


def _print_ablation(a: dict) -> None:
    on = "path off (others on)" if a["mode"] == "leave-one-out" else "path on (others off)"
    what = "forward = sum of its parts" if a["scope"] == "parts" else "whole forward"
    print(
        f"\nablation ({a['mode']}, {what}): {a['size']}x{a['size']}, batch {a['batch']}, {a['dtype']}, "
        f"{a['labels']} labels, median of {a['rounds']} paired rounds"
    )
    gflop = "" if a["baseline_gflop"] is None else f", {a['baseline_gflop']:.2f} GFLOP"
    print(f"  baseline {a['baseline_seconds_median']:.3f} s{gflop}; rows: {on}")
    print(
        f"  {'path':<16} {'timed on':<11} {'saved':>8} {'off/on':>7}  {'rounds':<22} {'GFLOP':>8}  |dlogit|"
    )
    for r in a["rows"]:
        rounds = " ".join(f"{v:.3f}" for v in r["speedup_rounds"])
        print(
            f"  {r['path']:<16} {'+'.join(r['parts']):<11} {r['saved_seconds'] * 1000:6.0f}ms {r['speedup']:7.3f}"
            f"  {rounds:<22} {'-' if r['gflop'] is None else format(r['gflop'], '8.2f'):>8}"
            f"  {r['max_abs_diff_vs_baseline']:.1e}"
        )


# ---------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", default="lseg_tiny", help="model name (random weights); default lseg_tiny")
    p.add_argument("--size", type=int, nargs="+", default=[128], help="square image sides (multiples of 32)")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4], help="batch sizes")
    p.add_argument("--dtype", nargs="+", default=["fp32"], choices=["fp32", "bf16", "fp16"], help="autocast")
    p.add_argument(
        "--compile", default="off", choices=["off", "on", "both"], help="torch.compile (exact shapes)"
    )
    p.add_argument("--channels-last", action="store_true", help="fast rows: NHWC convolution weights")
    p.add_argument(
        "--compile-options",
        type=json.loads,
        default=None,
        help="inductor options as JSON, e.g. '{\"freezing\": true}'",
    )
    p.add_argument("--labels", type=int, default=4, help=f"number of labels (at most {len(LABELS)})")
    p.add_argument("--iters", type=int, default=5, help="timed calls per row (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before each row")
    p.add_argument("--target-iters", type=int, default=3, help="interleaved timings in the target section")
    p.add_argument("--matmul-size", type=int, default=4096, help="side of the reference fp32 matmul")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-official", action="store_true", help="skip the official-like rows and timings")
    p.add_argument("--no-target", action="store_true", help="skip the FLOP-efficiency target section")
    p.add_argument("--no-rows", action="store_true", help="only the target section")
    p.add_argument(
        "--ablation",
        nargs="?",
        const="leave-one-out",
        choices=["leave-one-out", "alone"],
        help="time each fast path alone instead of the rows and target (default: leave-one-out)",
    )
    p.add_argument(
        "--paths",
        nargs="+",
        choices=[f.name for f in dataclasses.fields(FastPaths)],
        default=None,
        help="--ablation: only these fast paths (default: all)",
    )
    p.add_argument(
        "--flops", action="store_true", help="--ablation: also count FLOPs per configuration (fake tensors)"
    )
    p.add_argument(
        "--ablation-scope",
        default="forward",
        choices=["forward", "parts"],
        help="--ablation: time whole forwards, or only the parts each path changes (a ViT block x depth, "
        "everything after the blocks, the position embedding) and add the rest once per round",
    )
    p.add_argument(
        "--json", type=Path, default=None, help="output file (default bench_inference-<variant>.json)"
    )
    args = p.parse_args(argv)
    if not 1 <= args.labels <= len(LABELS):
        p.error(f"--labels must be between 1 and {len(LABELS)}")
    if any(s % 32 for s in args.size):
        p.error("--size values must be multiples of 32")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_inference: error: --device cuda but PyTorch sees no CUDA GPU", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    start = time.perf_counter()
    model = create_model(args.variant).eval().to(device)
    fast = channels_last(copy.deepcopy(model)) if args.channels_last else model  # same weights
    info = machine_info(device)
    print(
        f"{args.variant} on {info.get('gpu', info['cpu'])} ({info['torch_threads']} threads), "
        f"torch {info['torch']}, built in {time.perf_counter() - start:.1f} s"
    )
    result: dict = {
        "benchmark": "inference",
        "variant": args.variant,
        "machine": info,
        "args": {k: v for k, v in vars(args).items() if k != "json"},
    }
    if args.ablation:
        result["ablation"] = run_ablation(model, args, device)
        _print_ablation(result["ablation"])
    if not args.no_rows and not args.ablation:
        print(f"  {'size':>5} {'bs':>3}  {'path':<9} dtype")
        result["rows"] = run_rows(model, fast, args, device)
        print("\n  speed-up over the plain fp32 eager path (reference) and the official-like forward:")
        for r in result["rows"]:
            off = r["speedup_vs_official"]
            print(
                f"  {r['size']:>5} {r['batch']:>3}  {r['name']:<9} {r['dtype']:<4} compile={r['compile']:<3}"
                f"  x{r['speedup_vs_reference']:.2f} vs reference"
                + ("" if off is None else f"  x{off:.2f} vs official")
            )
    if not args.no_target and not args.ablation:
        result["target"] = run_target(model, fast, args, device)
        _print_target(result["target"])
    result["machine"]["load_average_end"] = os.getloadavg()
    out = args.json or Path(f"bench_inference-{args.variant}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
