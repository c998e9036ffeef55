"""``langseg weights``: list, download and locate named weights."""

from __future__ import annotations

import argparse
import sys

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
    p.add_argument(
        "names",
        nargs="*",
        help="weights names (for download/path); 'path' prints where each is or will be, without downloading "
        "(exit status 1 when one is not there yet)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import LangsegError
    from ..hub import REGISTRY, cache_dir, cached_path, is_cached
    from ..weights import bundled_weights, resolve_weights

    if args.action == "list":
        if args.names:
            raise LangsegError("'langseg weights list' takes no names")
        print(f"cache: {cache_dir()}")
        for name, path in bundled_weights().items():
            print(f"  {name:26s} bundled  {path}")
        for name, e in REGISTRY.items():
            here = "cached" if is_cached(name) else "remote"
            print(f"  {name:26s} {here:8s} {e.description}" + (f" [{e.note}]" if e.note else ""))
        return 0
    if not args.names:
        raise LangsegError(f"'langseg weights {args.action}' needs at least one weights name")
    bundled = bundled_weights()
    unknown = [n for n in args.names if n not in bundled and n not in REGISTRY]
    if unknown:
        known = ", ".join(sorted(bundled) + sorted(REGISTRY))
        raise LangsegError(f"unknown weights name {unknown[0]!r}; known names: {known}")
    if args.action == "path":  # where the weights are or will be; never downloads
        missing = 0
        for name in args.names:
            path = bundled.get(name) or cached_path(name)
            print(path)
            if name not in bundled and not is_cached(name):
                missing += 1
                print(
                    f"langseg: {name} is not downloaded yet; 'langseg weights download {name}' puts it "
                    f"there (the official file {REGISTRY[name].filename} goes to "
                    f"{cache_dir() / 'downloads'} first)",
                    file=sys.stderr,
                )
        return 1 if missing else 0
    for name in args.names:
        print(resolve_weights(name))
    return 0
