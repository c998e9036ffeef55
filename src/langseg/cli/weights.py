"""``langseg weights``: list, download and locate named weights; upload a model to the Hugging Face Hub."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ORDER = 60


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights",
        help="list or download named weights; push a model to the Hugging Face Hub",
        description="Named weights: the bundled toy model and the official lang-seg checkpoints, downloaded "
        "once into the cache ($LANGSEG_CACHE, default ~/.cache/langseg) and converted to safetensors "
        "(the official files have no published hash: the SHA-256 of each download is shown and recorded, "
        "and the cached files are checked against the record on every use); hf-hub:ORG/NAME[@REVISION] "
        "models, downloaded into the Hugging Face cache. 'push' uploads a saved model or a training run "
        "(its best/, else last/) with a generated model card.",
        epilog="examples:\n  langseg weights list\n  langseg weights download lseg-demo-vitl16\n"
        "  langseg weights path hf-hub:someone/lseg-ade20k@v1.0\n"
        "  langseg weights push runs/toy someone/lseg-toy --eval-record toy-eval.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["list", "download", "path", "push"], help="what to do")
    p.add_argument(
        "names",
        nargs="*",
        help="weights names (download/path); for push: RUN_OR_FOLDER ORG/NAME. 'path' prints where each "
        "is or will be without downloading (exit status 1 when one is not there yet)",
    )
    push = p.add_argument_group("push options")
    push.add_argument("--revision", help="branch to commit to (created from main if missing; default main)")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--message", help="commit message")
    push.add_argument("--eval-record", type=Path, help="JSON record of `langseg eval` for the model card")
    push.add_argument("--license", default="mit", help="license id in the model card (default: mit)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import LangsegError
    from ..hub import REGISTRY
    from ..weights import bundled_weights, resolve_weights

    if args.action == "list":
        if args.names:
            raise LangsegError("'langseg weights list' takes no names")
        return _list()
    if args.action == "push":
        return _push(args)
    if not args.names:
        raise LangsegError(f"'langseg weights {args.action}' needs at least one weights name")
    bundled = bundled_weights()
    unknown = [
        n for n in args.names if n not in bundled and n not in REGISTRY and not n.startswith("hf-hub:")
    ]
    if unknown:
        known = ", ".join(sorted(bundled) + sorted(REGISTRY))
        raise LangsegError(f"unknown weights name {unknown[0]!r}; known names: {known}")
    if args.action == "path":
        return _path(args.names, bundled)
    for name in args.names:
        print(resolve_weights(name))
    return 0


def _list() -> int:
    from ..hub import REGISTRY, cache_dir, is_cached, read_record, record_path
    from ..weights import bundled_weights

    print(f"cache: {cache_dir()}")
    for name, path in bundled_weights().items():
        print(f"  {name:26s} bundled  {path}")
    for name, e in REGISTRY.items():
        cached = is_cached(name)
        here = "n/a" if e.unavailable else "cached" if cached else "remote"
        line = f"  {name:26s} {here:8s} {e.description}" + (f" [{e.note}]" if e.note else "")
        digest = read_record(record_path(name)).get("sha256") if cached else None
        if digest:
            line += f"\n  {'':26s} {'':8s} SHA-256 of {e.filename} at first download: {digest}"
        print(line)
    return 0


def _push(args: argparse.Namespace) -> int:
    from ..errors import LangsegError
    from ..hf_hub import push_to_hub

    if len(args.names) != 2:
        raise LangsegError("weights push takes two arguments: RUN_OR_FOLDER ORG/NAME")
    url = push_to_hub(
        Path(args.names[0]),
        args.names[1],
        revision=args.revision,
        private=args.private or None,
        commit_message=args.message,
        eval_record=args.eval_record,
        license=args.license,
    )
    print(url)
    return 0


def _path(names: list[str], bundled: dict[str, Path]) -> int:
    """Where the weights are or will be; never downloads. Exit status 1 when one is not there yet."""
    from ..hub import REGISTRY, cache_dir, cached_path, is_cached
    from ..weights import resolve_weights

    missing = 0
    for name in names:
        if name.startswith("hf-hub:"):  # the Hugging Face cache decides where; it may download
            print(resolve_weights(name))
            continue
        print(bundled.get(name) or cached_path(name))
        if name not in bundled and not is_cached(name):
            missing += 1
            print(
                f"langseg: {name} is not downloaded yet; 'langseg weights download {name}' puts it "
                f"there (the official file {REGISTRY[name].filename} goes to "
                f"{cache_dir() / 'downloads'} first)",
                file=sys.stderr,
            )
    return 1 if missing else 0
