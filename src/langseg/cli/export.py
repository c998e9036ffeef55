"""``langseg export``: the image network as an ONNX graph, checked against the eager model."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 55


def size_arg(text: str) -> tuple[int, int]:
    h, sep, w = text.lower().partition("x")
    if (
        not sep
        or not h.isdigit()
        or not w.isdigit()
        or int(h) % 32
        or int(w) % 32
        or not int(h)
        or not int(w)
    ):
        raise argparse.ArgumentTypeError(f"{text!r}: expected HxW with multiples of 32, e.g. 384x512")
    return int(h), int(w)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export the network to ONNX (dynamic size; logits with --labels), verified with onnxruntime",
        description="Write the image network as an ONNX graph: normalized (B, 3, H, W) images, H and W "
        "multiples of 32, batch/height/width dynamic -> unit-norm pixel embeddings 'pixels' (B, D, H/2, W/2); "
        "with --labels the text embeddings are a constant in the graph and it also returns 'logits' "
        "(B, K, H, W). The graph is then run with onnxruntime on the CPU on two sizes and compared with the "
        "eager model (max |difference| printed; float32 must agree within 1e-4). A JSON record is written "
        "beside it (OUT with .json).",
        epilog="examples:\n  langseg export lseg-toy toy.onnx --format onnx\n"
        '  langseg export lseg-demo-vitl16 demo.onnx --labels "cat;kitten,grass,other" --dtype float16',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("weights", help="weights: a path, a name (lseg-toy, lseg-demo-vitl16) or hf-hub:ORG/NAME")
    p.add_argument("out", type=Path, help="output .onnx file")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="output format (onnx)")
    p.add_argument(
        "--labels", help='labels baked into the graph, e.g. "cat;kitten,grass,other" (adds logits)'
    )
    p.add_argument(
        "--template", action="append", help="prompt template with {} for the labels (repeat to ensemble)"
    )
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="graph dtype")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (17 or newer; default 18)")
    p.add_argument(
        "--verify-size",
        type=size_arg,
        action="append",
        help="HxW to verify at (repeat; default: the native size and a wider one)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..export import export_onnx
    from ..files import write_json
    from ..labels import parse_labels
    from ..weights import load_model

    labels = parse_labels(args.labels) if args.labels is not None else None
    model = load_model(args.weights, device="cpu")
    record_path = args.out.with_suffix(".json")
    if record_path.exists() and not args.overwrite:
        from ..files import OutputExistsError

        raise OutputExistsError(f"{record_path} exists; pass --overwrite to replace it")
    result = export_onnx(
        model,
        args.out,
        labels=labels,
        templates=args.template,
        dtype=getattr(torch, args.dtype),
        opset=args.opset,
        verify_sizes=args.verify_size,
        overwrite=args.overwrite,
    )
    for c in result.checks:
        print(
            f"{c.output:7s} {c.size[0]}x{c.size[1]}: max |onnxruntime - eager| = {c.max_abs_diff:.3g} (<= {c.tolerance:g})"
        )
    record = {
        **result.record(),
        "weights": args.weights,
        "model": model.config.name,
        "dtype": args.dtype,
        "opset": args.opset,
        "input": {
            "name": "images",
            "layout": "(B, 3, H, W), H and W multiples of 32",
            "mean": list(model.config.mean),
            "std": list(model.config.std),
        },
    }
    write_json(record_path, record, overwrite=args.overwrite)
    print(f"wrote {args.out} ({', '.join(result.outputs)}) and {record_path}")
    return 0
