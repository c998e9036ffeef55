"""One GPU session's worth of checks and measurements (run by ``benchmarks/gpu_check.sh``).

Correctness that needs CUDA kernels, then the measurements of docs/performance.md, each section under a
shared deadline (a section that would not fit is recorded as skipped), results written after every
section (a killed run still leaves what it measured):

- autocast: bf16 and fp16 logits vs fp32 (ViT-L/16, 480^2, 150 labels): max |dlogit|, arg-max agreement
- official_numerics: ``set_numerics("official")`` on CUDA vs the same on the CPU (share of bit-identical
  logits), and vs the official code's CUDA fp16 logits when the reference fixtures are found
- throughput: images/s at batch 1/8/32, bf16 and fp32
- memory: peak GPU memory, bf16, 150 labels: 1024^2 single pass, 2048^2 sliding window and multi-scale
- multiscale: the official multi-scale evaluator, windows batched (8 per call) vs one window per call
- training: one training step (ade20k_vitl16 recipe, random weights), bf16 vs fp32
- compile: ``CompiledLSeg`` (torch.compile, exact shapes) vs eager

``--dry-run`` runs every section on the CPU with the tiny model and small sizes (for CI).
Writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # the sibling benchmark scripts

from bench_inference import machine_info, timed  # noqa: E402
from bench_memory import run_case  # noqa: E402

import langseg  # noqa: E402
from langseg.accel import CompiledLSeg, autocast  # noqa: E402
from langseg.inference import MultiScaleConfig, multi_scale, pad_value  # noqa: E402

LOW = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: the GPU plan, or the tiny CPU plan of ``--dry-run``."""

    device: str
    variant: str
    size: int  # square side of the throughput / correctness images
    batches: tuple[int, ...]
    labels: int
    memory: tuple[tuple[str, int], ...]  # (bench_memory case, side)
    ms_size: tuple[int, int]  # multi-scale image (h, w)
    ms_crop: int
    train_config: str
    train_batch: int
    train_crop: int
    compile_backend: str
    iters: int  # timed calls per measurement (the median is reported)
    warmup: int
    ms_scales: tuple[float, ...]  # multi-scale evaluator scales
    train_steps: int
    train_warmup: int


GPU = Plan(
    device="cuda",
    variant="lseg_vitl16_384",
    size=480,
    batches=(1, 8, 32),
    labels=150,
    memory=(("single", 1024), ("sliding", 2048), ("multiscale", 2048)),
    ms_size=(512, 683),
    ms_crop=480,
    train_config="ade20k_vitl16",
    train_batch=8,
    train_crop=480,
    compile_backend="inductor",
    iters=10,
    warmup=2,
    ms_scales=MultiScaleConfig().scales,  # the official 0.5-1.75
    train_steps=5,
    train_warmup=1,
)
DRY = Plan(
    device="cpu",
    variant="lseg_tiny",
    size=64,
    batches=(1, 2),
    labels=6,
    memory=(("single", 96),),
    ms_size=(64, 96),
    ms_crop=64,
    train_config="toy",
    train_batch=2,
    train_crop=64,
    compile_backend="eager",
    iters=1,
    warmup=1,
    ms_scales=(0.75,),
    train_steps=1,
    train_warmup=0,
)


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def labels(n: int) -> list[str]:
    return [f"class {i}" for i in range(n)]


def compare(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Two logit maps ``(B, K, H, W)``: max |difference|, share bit-identical, arg-max agreement."""
    a, b = a.float().cpu(), b.float().cpu()
    return {
        "max_abs_diff": float((a - b).abs().max()),
        "bit_identical": float((a == b).float().mean()),
        "argmax_agreement": float((a.argmax(1) == b.argmax(1)).float().mean()),
    }


_MODELS: dict[tuple[str, str], langseg.models.LSeg] = {}  # one random-weight network per device, reused


def model_on(plan: Plan, device: torch.device) -> langseg.models.LSeg:
    """The plan's network (seed 0) on ``device``, fp32 numerics (compile, the last section, changes
    its fast paths)."""
    key = (plan.variant, str(device))
    if key not in _MODELS:
        torch.manual_seed(0)
        _MODELS[key] = langseg.create_model(plan.variant).to(device).eval()
    model = _MODELS[key]
    model.set_numerics("fp32")
    return model


# ------------------------------------------------------------------------------------- sections
def check_autocast(plan: Plan, device: torch.device) -> dict:
    model = model_on(plan, device)
    x = torch.randn(2, 3, plan.size, plan.size, device=device)
    text = model.encode_text(labels(plan.labels))
    with torch.inference_mode():
        ref = model(x, text)
        out = {"fp32_logit_range": [float(ref.min()), float(ref.max())]}
        for name in LOW:
            with autocast(device, name):
                out[name] = compare(model(x, text), ref)
    return out


def find_reference() -> Path | None:
    for candidate in (
        os.environ.get("LANGSEG_REFERENCE"),
        REPO / "shared" / "reference",
        REPO.parent / "shared" / "reference",
    ):
        if candidate and (Path(candidate) / "fixtures" / "lseg_vitl16_384.pt").is_file():
            return Path(candidate)
    return None


def check_official_numerics(plan: Plan, device: torch.device) -> dict:
    cpu = model_on(plan, torch.device("cpu"))
    here = model_on(plan, device)
    for m in (cpu, here):
        m.set_numerics("official")
    x = torch.randn(1, 3, plan.size, plan.size)
    names = labels(plan.labels)
    with torch.inference_mode():
        out = {"device_vs_cpu": compare(here(x.to(device), names), cpu(x, names))}
    ref = find_reference()
    out["reference"] = str(ref) if ref else None
    if ref is not None and plan.variant == "lseg_vitl16_384":
        out["vs_official_cuda_fp16"] = official_fixture_check(ref, device)
    return out


def official_fixture_check(ref: Path, device: torch.device) -> dict:
    """Our official numerics on this device vs the official code's CUDA fp16 logits (fixtures)."""
    import tempfile

    sys.path.insert(0, str(ref))
    import lseg_fixtures as fixtures
    import synth_weights as synth

    fix = fixtures.load_fixture("lseg_vitl16_384")
    sd = synth.synth_state_dict(fixtures.manifest_path("lseg_vitl16_384"), seed=fix["meta"]["synth"]["seed"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synth.ckpt"
        synth.save_checkpoint(synth.make_lightning_checkpoint(sd, class_keyed_callbacks=True), path)
        del sd
        model = langseg.load_model(path, device=device)
    model.set_numerics("official")
    cases = {}
    for case in ("square384_set1", "wide320x480_set2"):
        c = fix["cases"][case]
        x = fixtures.case_input(fix, case).to(device)
        with torch.inference_mode():
            lowres = model.logits_lowres(model.encode_image(x), model.encode_text(c["labels"]))
        cases[case] = compare(lowres, c["official_logits_lowres_fp16"])
    return cases


def measure_throughput(plan: Plan, device: torch.device) -> dict:
    model = model_on(plan, device)
    text = model.encode_text(labels(4))
    rows = []
    for precision in ("bf16", "fp32"):
        for batch in plan.batches:
            x = torch.randn(batch, 3, plan.size, plan.size, device=device)

            def call(x: torch.Tensor = x, precision: str = precision) -> None:
                with torch.inference_mode(), autocast(device, precision):
                    model(x, text)

            t = sorted(timed(call, plan.iters, plan.warmup, device))[plan.iters // 2]  # the median
            rows.append({"precision": precision, "batch": batch, "images_per_s": batch / t, "s_per_call": t})
    return {"size": plan.size, "labels": 4, "rows": rows}


def measure_memory(plan: Plan, device: torch.device) -> dict:
    model = model_on(plan, device)
    rows = []
    for case, side in plan.memory:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        with torch.inference_mode(), autocast(device, "bf16"):
            run_case(model, case, side, plan.labels, 8, device)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        rows.append({"case": case, "side": side, "peak_gib": peak, "seconds": time.perf_counter() - start})
    return {"precision": "bf16", "labels": plan.labels, "rows": rows}


def measure_multiscale(plan: Plan, device: torch.device) -> dict:
    model = model_on(plan, device)
    text = model.encode_text(labels(plan.labels))
    value = pad_value(model.config.mean, model.config.std).to(device)
    h, w = plan.ms_size
    x = torch.randn(1, 3, h, w, device=device)
    base = max(h, w) if plan is DRY else 520
    out, maps = {}, {}
    for name, batch in (("batched_8", 8), ("one_crop", 1)):
        cfg = MultiScaleConfig(plan.ms_scales, crop_size=plan.ms_crop, base_size=base, batch_size=batch)

        def call(cfg: MultiScaleConfig = cfg, name: str = name) -> None:
            with torch.inference_mode(), autocast(device, "bf16"):
                maps[name] = multi_scale(lambda b: model(b, text).float(), x, value, cfg)

        out[name + "_s"] = min(timed(call, max(1, plan.iters // 5), 1 if plan is GPU else 0, device))
    out["speedup"] = out["one_crop_s"] / out["batched_8_s"]
    out["max_abs_diff"] = float((maps["batched_8"] - maps["one_crop"]).abs().max())
    out["size"] = [h, w]
    return out


def measure_training(plan: Plan, device: torch.device) -> dict:
    from bench_train import bench_one

    args = argparse.Namespace(
        device=str(device),
        batch_size=plan.train_batch,
        crop=plan.train_crop,
        steps=plan.train_steps,
        warmup=1,
    )
    rows = {p: bench_one(plan.train_config, p, args) for p in ("fp32", "bf16")}
    return {
        "config": plan.train_config,
        "rows": list(rows.values()),
        "bf16_vs_fp32": rows["bf16"]["images_per_s"] / rows["fp32"]["images_per_s"],
    }


def check_compile(plan: Plan, device: torch.device) -> dict:
    model = model_on(plan, device)
    x = torch.randn(plan.batches[-1], 3, plan.size, plan.size, device=device)
    names = labels(4)
    compiled = CompiledLSeg(model, mode="exact", backend=plan.compile_backend)  # sets the eager paths it uses
    with torch.inference_mode():
        want = model(x, names)  # eager, the same fast paths
        start = time.perf_counter()
        got = compiled(x, names)
        first = time.perf_counter() - start
        again = sorted(timed(lambda: compiled(x, names), plan.iters, plan.warmup, device))[plan.iters // 2]
        eager = sorted(timed(lambda: model(x, names), plan.iters, plan.warmup, device))[plan.iters // 2]
    return {
        "backend": plan.compile_backend,
        "batch": x.shape[0],
        "first_call_s": first,
        "compiled_s": again,
        "eager_s": eager,
        **compare(got, want),
    }


SECTIONS: list[tuple[str, Callable[[Plan, torch.device], dict], float]] = [
    # name, function, seconds it needs on the GPU plan (a section is skipped when less time is left)
    ("autocast", check_autocast, 20),
    ("official_numerics", check_official_numerics, 40),
    ("throughput", measure_throughput, 60),
    ("memory", measure_memory, 40),
    ("multiscale", measure_multiscale, 40),
    ("training", measure_training, 60),
    ("compile", check_compile, 120),
]


# ------------------------------------------------------------------------------------- report
def markdown(result: dict) -> str:
    lines = [
        f"# GPU check ({'dry run, CPU, tiny model' if result['dry_run'] else result['machine'].get('gpu', '')})",
        "",
        "| section | measurement | value |",
        "|---|---|---:|",
    ]

    def row(section: str, what: str, value: object) -> None:
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        lines.append(f"| {section} | {what} | {text} |")

    for name, sec in result["sections"].items():
        if "skipped" in sec or "error" in sec:
            row(name, "not run", sec.get("skipped") or sec["error"].splitlines()[-1])
            continue
        if name == "autocast":
            for p in LOW:
                row(
                    name,
                    f"{p} vs fp32: max abs dlogit / arg-max agreement",
                    f"{sec[p]['max_abs_diff']:.3g} / {sec[p]['argmax_agreement']:.4f}",
                )
        elif name == "official_numerics":
            d = sec["device_vs_cpu"]
            row(
                name,
                "device vs CPU: bit-identical / max abs dlogit",
                f"{d['bit_identical']:.4f} / {d['max_abs_diff']:.3g}",
            )
            for case, c in sec.get("vs_official_cuda_fp16", {}).items():
                row(
                    name,
                    f"vs official CUDA fp16 ({case}): bit-identical / max",
                    f"{c['bit_identical']:.4f} / {c['max_abs_diff']:.3g}",
                )
        elif name == "throughput":
            for r in sec["rows"]:
                row(name, f"{sec['size']}^2 {r['precision']} batch {r['batch']}: images/s", r["images_per_s"])
        elif name == "memory":
            for r in sec["rows"]:
                row(
                    name,
                    f"{r['case']} {r['side']}^2 bf16: peak GiB",
                    r["peak_gib"] if r["peak_gib"] is not None else "n/a (CPU)",
                )
        elif name == "multiscale":
            row(name, "batched (8) vs one crop per call: speed-up", sec["speedup"])
            row(name, "batched vs one crop: max abs difference", sec["max_abs_diff"])
        elif name == "training":
            for r in sec["rows"]:
                row(
                    name,
                    f"{r['config']} {r['precision']} batch {r['batch']}x{r['crop']}: images/s",
                    r["images_per_s"],
                )
            row(name, "bf16 vs fp32", sec["bf16_vs_fp32"])
        elif name == "compile":
            row(name, f"compiled ({sec['backend']}) vs eager: max abs dlogit", sec["max_abs_diff"])
            row(name, "first call (compile) s", sec["first_call_s"])
            row(
                name, f"compiled vs eager speed-up (batch {sec['batch']})", sec["eager_s"] / sec["compiled_s"]
            )
        row(name, "section seconds", sec["seconds"])
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path) -> None:
    """Both files, replaced whole after every section."""
    for name, text in (
        ("gpu_check.json", json.dumps(result, indent=2) + "\n"),
        ("gpu_check.md", markdown(result)),
    ):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, out / name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny model, small sizes (CI)")
    p.add_argument("--budget", type=float, default=450, help="seconds for all sections (default 450)")
    p.add_argument("--only", nargs="+", default=None, help="run these sections only")
    args = p.parse_args(argv)
    plan = DRY if args.dry_run else GPU
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --dry-run on a CPU)", file=sys.stderr)
        return 2
    device = torch.device(plan.device)
    args.out.mkdir(parents=True, exist_ok=True)
    deadline = Deadline(args.budget)
    result = {"dry_run": args.dry_run, "machine": machine_info(device), "plan": plan.__dict__, "sections": {}}
    for name, fn, need in SECTIONS:
        if args.only and name not in args.only:
            continue
        if not args.dry_run and deadline.left() < need:
            result["sections"][name] = {"skipped": f"{deadline.left():.0f} s left, needs ~{need:.0f} s"}
        else:
            start, cpu = time.perf_counter(), time.process_time()
            try:
                sec = fn(plan, device)
            except Exception:  # one failing section must not cost the others
                sec = {"error": traceback.format_exc()}
            sec["seconds"] = time.perf_counter() - start
            sec["cpu_seconds"] = time.process_time() - cpu
            result["sections"][name] = sec
        write(result, args.out)
        print(f"gpu_check: {name} done ({deadline.left():.0f} s left)", flush=True)
    sys.stdout.write(markdown(result))
    failed = [n for n, s in result["sections"].items() if "error" in s]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
