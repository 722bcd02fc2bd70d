"""Random ids drawn in batches (gateway/ids.py): fresh in every call, thread and process."""

from __future__ import annotations

import os
import re
import threading

from gateway import ids

HEX32 = re.compile(r"[0-9a-f]{32}").fullmatch


def test_ids_are_128_bit_hex_and_never_repeat_across_batches():
    drawn = [part for _ in range(5 * ids.BATCH) for part in ids.id_pair()]
    drawn += [ids.fresh_id() for _ in range(ids.BATCH)]
    assert all(HEX32(one) for one in drawn)
    assert len(set(drawn)) == len(drawn)


def test_threads_drawing_at_once_never_share_an_id():
    drawn: list[list[str]] = [[] for _ in range(8)]
    start = threading.Barrier(len(drawn))

    def draw(into: list[str]) -> None:
        start.wait()
        into.extend(ids.id_pair_hex() for _ in range(20 * ids.BATCH))

    threads = [threading.Thread(target=draw, args=(into,)) for into in drawn]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [pair for into in drawn for pair in into]
    assert len(every) == 8 * 20 * ids.BATCH
    assert len(set(every)) == len(every)


def test_a_forked_child_does_not_hand_out_its_parents_batch():
    ids.id_pair_hex()  # the parent holds a batch, most of it unused
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            os.write(write_end, " ".join(ids.id_pair_hex() for _ in range(4)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = [ids.id_pair_hex() for _ in range(4)]
    assert len(child) == 4
    assert set(child).isdisjoint(parent)
