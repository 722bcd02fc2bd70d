"""Random ids: claim tokens and delivery ids, 128 bits each from the operating system's
CSPRNG (``os.urandom``), as 32 hex characters.

Drawn in batches: every create needs a token and a delivery id (the claim script takes
them in case it queues a run or a delivery), and one ``getrandom`` system call per create
was a measurable part of the reuse hit (docs/PERFORMANCE.md, "Fourth round"). A batch
holds ``BATCH`` pairs; the bytes are as random as when drawn one by one, they only wait in
this process's memory (where the app's secrets live too) until used.

A forked child (a gunicorn worker forked from the master that loaded the app, an RQ work
horse) starts with an empty batch: two processes never hand out the same id.
"""

from __future__ import annotations

import os

#: Pairs drawn per system call: 64 pairs = 4 KiB of randomness.
BATCH = 64
_PAIR_HEX = 64

# Taken with list.pop(), which is atomic under the GIL: threads of one process each get
# their own pair without a lock, and two threads refilling at once only draw one batch more.
_pairs: list[str] = []


def _refill() -> None:
    drawn = os.urandom(BATCH * _PAIR_HEX // 2).hex()
    _pairs.extend([drawn[start : start + _PAIR_HEX] for start in range(0, len(drawn), _PAIR_HEX)])


def id_pair_hex() -> str:
    """Two fresh random ids, 64 hex characters: the first 32 are one id, the last 32 the other."""
    while True:
        try:
            return _pairs.pop()
        except IndexError:
            _refill()


def id_pair() -> tuple[str, str]:
    """Two fresh random ids (see ``id_pair_hex``), apart."""
    pair = id_pair_hex()
    return pair[:32], pair[32:]


def fresh_id() -> str:
    """One fresh random id."""
    return id_pair_hex()[:32]


os.register_at_fork(after_in_child=_pairs.clear)
