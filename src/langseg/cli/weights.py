"""``langseg weights``: list, download and locate named weights; upload a model to the Hugging Face Hub."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 60


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights",
        help="list or download named weights; push a model to the Hugging Face Hub",
        description="Named weights: the bundled toy model and the official lang-seg checkpoints, downloaded "
        "once into the cache ($LANGSEG_CACHE, default ~/.cache/langseg) and converted to safetensors; "
        "hf-hub:ORG/NAME[@REVISION] models, downloaded into the Hugging Face cache. 'push' uploads a saved "
        "model or a training run (its best/, else last/) with a generated model card.",
        epilog="examples:\n  langseg weights list\n  langseg weights download lseg-demo-vitl16\n"
        "  langseg weights path hf-hub:someone/lseg-ade20k@v1.0\n"
        "  langseg weights push runs/toy someone/lseg-toy --eval-record toy-eval.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["list", "download", "path", "push"], help="what to do")
    p.add_argument(
        "names",
        nargs="*",
        help="weights names (download/path); for push: RUN_OR_FOLDER ORG/NAME",
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
    if args.action == "push":
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
    for name in args.names:
        print(resolve_weights(name))
    return 0
