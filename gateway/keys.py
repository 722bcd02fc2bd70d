"""Every Redis key the gateway uses for task documents, built in one place.

All keys of one task carry the hash tag ``{<task_id>}`` so that one Lua script
touches one Redis Cluster slot.
"""

from __future__ import annotations

PREFIX = "gw"


def task_document(task_id: str) -> str:
    """The hash that holds a task's whole document.

    Fields: ``meta`` (timestamps, stage count, the latest request's pointers),
    ``request`` (the latest create request, opaque JSON), and per stage ``s:<name>``
    (state JSON, touched by Lua), ``i:<name>`` and ``o:<name>`` (input and output,
    opaque JSON that Lua never decodes).
    """
    return f"{PREFIX}:task:{{{task_id}}}"
