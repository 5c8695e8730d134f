"""Argument parsing shared by the job and its subcommands.

Every rank parses the same argv, so every rank reaches the same verdict
without communicating; parse errors raise InputError (exit 2, one line on
rank 0) instead of argparse printing usage on every rank.
"""

from __future__ import annotations

import argparse
import re
from typing import Callable, List

import numpy as np

from ..errors import InputError
from ..operands import check_dtype


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage on every rank."""

    def error(self, message):
        raise InputError(message)

    def exit(self, status=0, message=None):
        if message:
            raise InputError(message.strip())
        raise SystemExit(status)


def parse_or_help(parser: argparse.ArgumentParser, argv: List[str], comm):
    """Parse argv (the same on every rank); for -h/--help print once, on rank 0, and return None.

    argparse would print the help on every rank; the job and its subcommands
    all come through here.
    """
    if any(a in ("-h", "--help") for a in argv):
        if comm.rank == 0:
            parser.print_help()
        return None
    return parser.parse_args(argv)


def typed(fn: Callable) -> Callable:
    """An argparse type from a function that raises ValueError with a message."""
    def parse(text):
        try:
            return fn(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    parse.__name__ = fn.__name__
    return parse


def dtype_arg(text: str) -> np.dtype:
    try:
        dtype = np.dtype(text)
    except TypeError:
        raise argparse.ArgumentTypeError(f"unknown dtype {text!r}") from None
    try:
        check_dtype(dtype, "--dtype")
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return dtype


def nonneg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def positive(text: str) -> int:
    value = nonneg(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_bandwidth(text: str) -> float:
    """'12.5e9', '12.5GB/s', '100Gb/s' (bits), '800MB/s' -> bytes per second."""
    m = re.fullmatch(r"\s*([0-9.]+(?:[eE][-+]?\d+)?)\s*([kKmMgGtT]?)\s*(B|b|bit|bits)?(?:/s|ps)?\s*", text)
    if not m:
        raise ValueError(f"bandwidth must look like 12.5e9, 12.5GB/s or 100Gb/s, not {text!r}")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if m.group(3) in ("b", "bit", "bits"):
        value /= 8
    if value <= 0:
        raise ValueError("bandwidth must be positive")
    return value


def parse_latency(text: str) -> float:
    """'2e-6', '2us', '1.5 ms' -> seconds."""
    m = re.fullmatch(r"\s*([0-9.]+(?:[eE][-+]?\d+)?)\s*(s|ms|us|µs|ns)?\s*", text)
    if not m:
        raise ValueError(f"latency must look like 2e-6, 2us or 0.5ms, not {text!r}")
    value = float(m.group(1)) * _TIME_UNITS[m.group(2) or "s"]
    if value < 0:
        raise ValueError("latency must not be negative")
    return value
