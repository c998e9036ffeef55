"""What the user sees of a run over many inputs: the progress bar, the skipped inputs as they happen,
and the end-of-run totals with the exit status."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from . import EXIT_INPUTS, EXIT_INTERNAL, INTERNAL_ERROR


class Report:
    """Counts outcomes and tells the user about skipped inputs as they happen and at the end."""

    def __init__(self, notes: list[str]) -> None:
        self.done = 0
        self.kept = 0
        self.skipped: list[str] = []
        self.internal = 0  # inputs lost to an unexpected error (a bug): exit status 70
        for note in notes:
            self.skip(note)

    @contextlib.contextmanager
    def guard(self, path: Path | str):
        """Run one input's work; an error is reported with the input's name and the run goes on.

        :class:`LangsegError` (a problem with that input) skips it; any other exception is an
        internal error, reported as such (traceback only under ``--verbose``).
        """
        from ..errors import LangsegError

        try:
            yield
        except LangsegError as e:
            text = str(e)
            self.skip(text if text.startswith(str(path)) else f"{path}: {text}")
        except Exception as e:
            logging.getLogger(__name__).info("details of the internal error:", exc_info=True)
            self.internal += 1
            first = str(e).splitlines()[0] if str(e) else ""
            self.skip(f"{path}: {INTERNAL_ERROR} ({type(e).__name__}: {first[:200]})")

    def skip(self, message: str) -> None:
        from tqdm.auto import tqdm

        self.skipped.append(message)
        tqdm.write(f"langseg: skipped {message}", file=sys.stderr)

    def summary(self, verb: str, seconds: float, out: Path) -> int:
        """Print the totals (summed over all processes, by rank 0 alone) and return the exit status,
        the same on every rank. Each process reported its own skipped inputs as they happened."""
        from ..distributed import all_reduce, world

        done, kept, skipped = self.done, self.kept, len(self.skipped)
        rank, size = world()
        if size > 1:
            import torch

            totals = all_reduce(torch.tensor([done, kept, skipped], dtype=torch.int64))
            done, kept, skipped = (int(v) for v in totals)
            if rank != 0:
                return EXIT_INPUTS if skipped else 0
        rate = done / seconds if seconds > 0 else 0.0
        processes = f" on {size} processes" if size > 1 else ""
        print(
            f"{verb} {done} image{'s' if done != 1 else ''} in {seconds:.1f} s "
            f"({rate:.2f} images/s{processes}) -> {out}"
        )
        if kept:
            print(f"kept {kept} already done (--skip-existing)")
        if skipped:
            print(f"skipped {skipped} input{'s' if skipped != 1 else ''}:", file=sys.stderr)
            for message in self.skipped[:20]:
                print(f"  {message}", file=sys.stderr)
            if len(self.skipped) > 20:
                print(f"  ... and {len(self.skipped) - 20} more", file=sys.stderr)
            if skipped > len(self.skipped):
                print(
                    f"  ({skipped - len(self.skipped)} reported above by the other processes)",
                    file=sys.stderr,
                )
        if self.internal:
            return EXIT_INTERNAL
        return EXIT_INPUTS if skipped else 0


def progress(total: int, unit: str = "img"):
    """A progress bar on stderr (rank 0 only, for its own share, when several processes run)."""
    from tqdm.auto import tqdm

    from ..distributed import world

    disable = None if world()[0] == 0 else True
    return tqdm(total=total, unit=unit, file=sys.stderr, disable=disable, dynamic_ncols=True)
