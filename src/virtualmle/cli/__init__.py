"""Command-line entry point: `virtualmle <command> ...`.

Each command lives in its own module in this package and exposes ``register(subparsers)``,
which adds its parser and sets ``func`` to a callable taking the parsed namespace and
returning an exit code. This module only wires them together and turns user errors into one
line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from typing import Any

from virtualmle import __version__
from virtualmle.errors import VirtualMLEError

# Command modules, in the order `--help` lists them. A module that is missing is skipped so a
# partial checkout still runs the commands it has.
COMMANDS = ("train", "profile", "search", "tune", "report", "memory", "bench", "recommend", "evaluate")
# Commands whose work is in storage and picks up where it stopped when run again.
RESUMABLE = ("search", "tune", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="virtualmle",
        description=(
            "A virtual ML engineer for sequential recommenders (SASRec, HSTU): train one "
            "configuration, search with classic methods, or let the agent tune with reflection "
            "and memory."
        ),
    )
    parser.add_argument("--version", action="version", version=f"virtualmle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"virtualmle.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"virtualmle.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


class _Stopped(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be, so it takes the same path."""


def _stop_like_ctrl_c(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
    raise _Stopped


def _install_stop_signals() -> Any:
    """Install the SIGTERM handler; returns the handler to restore afterwards (None: nothing
    installed, e.g. off the main thread or when the caller has its own handler)."""
    """SIGTERM (``kill PID``, a scheduler's stop) takes the same path as Ctrl-C: running trials
    are killed and recorded as interrupted, so a resume re-runs them, and storage is left
    consistent. (A command started with ``&`` from a script inherits SIGINT as ignored, so for
    a background run ``kill PID`` is the way to stop it.)
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        return None
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    return previous


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = _install_stop_signals()
    try:
        return int(args.func(args) or 0)
    except VirtualMLEError as exc:
        print(f"virtualmle: error: {exc}", file=sys.stderr)
        return 2
    except _Stopped:
        hint = "; run the same command again to resume" if args.command in RESUMABLE else ""
        print(f"virtualmle: stopped (SIGTERM){hint}", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("virtualmle: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:  # in-process callers (tests, notebooks) get their handler back
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
