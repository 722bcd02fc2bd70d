"""The command-line knobs of ``bench/run.py``, shared by the drivers that run alone."""

from __future__ import annotations

import argparse


def parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured wrk run (default 5)")
    # Many short rounds: a round is unfair when one gunicorn process holds most connections.
    parser.add_argument("--rounds", type=int, default=6, help="gateway/floor alternations (default 6)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of wrk warm-up per server (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--stages", type=int, default=200, help="task documents for the memory figure (200)")
    parser.add_argument("--payload-bytes", type=int, default=1000, help="their input_data JSON size (1000)")
    parser.add_argument("--runs", type=int, default=2000, help="jobs per worker drain (default 2000)")
    return parser


def defaults() -> argparse.Namespace:
    """Every knob at its default (a driver that takes no options of its own)."""
    return parser("").parse_args([])
