"""``langseg weights``: list, download and locate named weights."""

from __future__ import annotations

import argparse

ORDER = 60


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights",
        help="list or download the official checkpoints by name",
        description="Named weights: the bundled toy model and the official lang-seg checkpoints, downloaded "
        "once into the cache ($LANGSEG_CACHE, default ~/.cache/langseg) and converted to safetensors.",
        epilog="examples:\n  langseg weights list\n  langseg weights download lseg-demo-vitl16",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["list", "download", "path"], help="what to do")
    p.add_argument("names", nargs="*", help="weights names (for download/path)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub import REGISTRY, cache_dir
    from ..weights import bundled_weights, resolve_weights

    if args.action == "list":
        print(f"cache: {cache_dir()}")
        for name, path in bundled_weights().items():
            print(f"  {name:26s} bundled  {path}")
        for name, e in REGISTRY.items():
            here = "cached" if (cache_dir() / name / "config.json").is_file() else "remote"
            print(f"  {name:26s} {here:8s} {e.description}" + (f" [{e.note}]" if e.note else ""))
        return 0
    for name in args.names:
        print(resolve_weights(name))
    return 0
