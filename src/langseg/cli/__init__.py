"""``langseg`` command line: a thin dispatcher over sub-command modules in this package.

Each command's module ``langseg/cli/<name>.py`` defines ``ORDER`` (position in the help), ``register(subparsers)``
which adds its parser and sets ``func``; heavy imports happen inside ``func``. Modules without ``register``
hold what commands share (``arguments``, ``plan``, ``session``, ``batches``, ``report``) or a command's own
parts (``scene_fuse``, ``scene_query``, ``features_index``, ``eval_results``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from ..errors import LangsegError

EPILOG = """examples:
  langseg segment examples/toy_scene.png --labels "red circle,blue square,background"
  langseg segment photos/ --labels "cat;kitten,grass,other" --weights lseg-demo-vitl16 --out masks/
  langseg features frames/ --out feats/ --weights lseg-demo-vitl16
  langseg eval --dataset ade20k --data-root datasets/ --weights lseg-demo-vitl16 --multi-scale
  langseg eval-zeroshot --dataset pascal --folds all --data-root data/Dataset_HSN
  langseg data toy --out data/toy && langseg train --config configs/toy.yaml --out runs/toy
  langseg app --weights lseg-demo-vitl16
  langseg convert demo_e200.ckpt lseg-demo/ --drop-unused
  langseg weights list

Run 'langseg COMMAND --help' for the options of each command.
"""


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="langseg",
        description="LSeg: segment images with any words, export dense CLIP-aligned features.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"langseg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(mod, "register"):
            modules.append(mod)
    for mod in sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__)):
        mod.register(sub)
    return parser


EXIT_INPUTS = 1  # some inputs were skipped (each reported by name); the others were processed
EXIT_USAGE = 2  # bad options, labels, weights or configuration: nothing was processed
EXIT_INTERNAL = 70  # an unexpected exception: a bug in langseg (sysexits' EX_SOFTWARE)
INTERNAL_ERROR = "internal error, please report"


def main(argv: list[str] | None = None) -> int:
    """Run one command. Exit status: 0 done, 1 inputs skipped, 2 usage/model errors, 70 internal errors.

    No exception reaches the user as a traceback: errors about the user's input are one line naming
    the file, label or key; anything else is an internal error, reported as such (with the
    traceback only under ``--verbose``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except LangsegError as e:
        print(f"langseg: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("langseg: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the system refused a file operation (permissions, disk full, ...)
        where = f"{e.filename}: " if e.filename else ""
        print(f"langseg: error: {where}{e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    except MemoryError:
        print("langseg: error: out of memory; try smaller inputs or settings", file=sys.stderr)
        return EXIT_INPUTS
    except Exception as e:
        logging.getLogger(__name__).info("details of the internal error:", exc_info=True)
        first = str(e).splitlines()[0] if str(e) else ""
        print(
            f"langseg: {INTERNAL_ERROR} ({type(e).__name__}: {first[:200]}); "
            "run again with --verbose for the details",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
