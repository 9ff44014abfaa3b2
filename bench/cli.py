"""What every `python -m bench.X` command shares: one-line usage errors, argument types, a quiet exit
on a closed pipe.

Rule of the house: bad input is reported as ONE line on stderr (`bench.X: error: ...`) with exit
code 2, no traceback, before anything is written. A command raises `UsageError` for its own
checks; `parser()` builds an argparse parser whose own errors become `UsageError` too, with the
module docstring as description (first paragraph) and epilog (the rest: examples, method).
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sys
from collections.abc import Callable


class UsageError(Exception):
    """Bad input: reported as one line on stderr with exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parser(prog: str, doc: str) -> OneLineParser:
    """A parser for `python -m PROG` described by its module docstring ``doc``."""
    head, _, rest = doc.partition("\n\n")
    return OneLineParser(prog=f"python -m {prog}", description=head, epilog=rest,
                         formatter_class=argparse.RawDescriptionHelpFormatter)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}") from None
    if not value >= 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def relative_tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a relative tolerance in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a relative tolerance in (0, 1), got {text!r}")
    return value


def clock(seconds: float) -> str:
    """Elapsed or remaining time for progress lines: H:MM:SS."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def report_usage_error(prog: str, err: BaseException) -> int:
    """Print ``err`` as the one-line usage error of ``prog``; return exit code 2."""
    print(f"{prog}: error: {err}", file=sys.stderr)
    return 2


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(main: Callable[[], int]) -> None:
    """`sys.exit(main())`, stopping quietly when stdout is a closed pipe (`... | head`). SIGTERM
    (`kill`, a job scheduler) is turned into KeyboardInterrupt, so it takes the Ctrl-C path: a
    running child is killed, finished rows are kept, and the command says so."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        sys.exit(main())
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
