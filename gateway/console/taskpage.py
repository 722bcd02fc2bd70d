"""What the console's task page shows of one task document: every stage with its
attempts, input and output, the requests that reused it, and its callback records with
every try. Built from the stored fields (``store.read_fields``, one ``HGETALL``), since
the API's document leaves out what only an operator needs (the earlier attempts, the
verdict each reusing request got, when a delivery tries next).

What the document keeps, and so what the page can show:

- per stage: its current attempt (queued, started, ended), and the last ten attempts it
  replaced (``lua/include/new_attempt.lua``: ``runs``);
- of the requests that reused a stage, those that asked for a callback: their record
  holds the verdict (``reuse_state``), ``input_matches`` and when it was made. A reuse
  hit without a callback writes nothing (that is what keeps it fast), so it leaves no
  trace to show;
- per callback record, its last ``store.MAX_TRIES_KEPT`` tries (time, HTTP status,
  error); the next try's time is read from the delivery watch list (``watches``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from gateway import documents, keys
from gateway.console import timeline
from gateway.documents import iso

if TYPE_CHECKING:
    from redis import Redis

    from gateway.queue_redis import QueueRedisMap

#: Characters of pretty JSON shown before "show all".
PREVIEW_CHARS = 1500
#: Characters of pretty JSON put in the page at all; the API has the rest.
FULL_CHARS = 200_000


@dataclass(frozen=True)
class JsonBlock:
    preview: str
    full: str | None  # None: the preview is all of it
    cut: bool  # the full text is cut at FULL_CHARS too
    size: int  # characters of the pretty text

    @classmethod
    def of(cls, stored: str | None, empty: str) -> JsonBlock:
        if stored is None:
            return cls(empty, None, False, len(empty))
        try:
            text = json.dumps(json.loads(stored), indent=2, ensure_ascii=False, sort_keys=False)
        except ValueError:
            text = stored
        if len(text) <= PREVIEW_CHARS:
            return cls(text, None, False, len(text))
        return cls(text[:PREVIEW_CHARS] + "\n…", text[:FULL_CHARS], len(text) > FULL_CHARS, len(text))


@dataclass(frozen=True)
class Try:
    number: int
    at: str | None
    status_code: int | None
    error: str | None


@dataclass
class Delivery:
    delivery_id: str
    url: str
    status: str
    attempts: int
    #: Still waiting for the stage's run to end before its first try.
    waiting: bool
    created_at: str | None
    updated_at: str | None
    tries: list[Try]
    next_try_at: str | None = None
    #: The request that asked for it was answered from the stage (a reuse).
    reuse: bool = False

    @property
    def resendable(self) -> bool:
        return self.status != documents.DeliveryStatus.QUEUED.value


@dataclass(frozen=True)
class Reuse:
    at: str | None
    verdict: str
    input_matches: bool | None
    cached_at: str | None
    delivery_id: str


@dataclass
class Stage:
    name: str
    status: str
    attempt: int
    lost: int
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    duration: float | None
    progress: float | None
    progress_message: str | None
    error: str | None
    input: JsonBlock
    output: JsonBlock
    attempts: list[timeline.Attempt]
    deliveries: list[Delivery] = field(default_factory=list)
    reuses: list[Reuse] = field(default_factory=list)

    @property
    def live(self) -> bool:
        return self.status in documents.LIVE_STATUSES

    @property
    def failed(self) -> bool:
        return self.status == documents.StageStatus.FAILED.value

    @property
    def progress_percent(self) -> int | None:
        return None if self.progress is None else round(self.progress * 100)


@dataclass
class TaskPage:
    task_id: str
    tenant: str | None
    status: str | None
    created_at: str | None
    updated_at: str | None
    latest_task_name: str | None
    latest_callback_url: str | None
    stages: list[Stage]
    timeline: timeline.Timeline

    @property
    def live(self) -> bool:
        """Whether the page changes by itself: a stage is pending or running, or a
        delivery is queued (an operator who pressed resend watches its try arrive)."""
        return any(stage.live or any(d.status == "queued" for d in stage.deliveries) for stage in self.stages)

    @property
    def any_failed(self) -> bool:
        return any(stage.failed for stage in self.stages)


def redact_url(url: str | None) -> str | None:
    """A callback URL without what may be a secret: its user and password, and the
    values of its query (receivers put tokens there)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return "(unreadable URL)"
    if parts.port:
        host = f"{host}:{parts.port}"
    if ":" in (parts.hostname or "") and not host.startswith("["):
        host = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port else "")
    query = "&".join(f"{pair.split('=', 1)[0]}=…" if "=" in pair else pair for pair in parts.query.split("&") if pair)
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


def _attempts(state: dict[str, Any]) -> list[timeline.Attempt]:
    earlier = state.get("runs") or []
    if isinstance(earlier, dict):  # cjson's empty list
        earlier = []
    attempts = [
        timeline.Attempt(r.get("attempt", 0), r.get("queued_ms"), r.get("started_ms"), r.get("ended_ms"), r["status"])
        for r in earlier
    ]
    number = state.get("attempt", 1)
    # A first attempt was queued when the stage was created; a later one keeps its own
    # time (a document stored before it was kept shows its run only).
    queued = state.get("queued_ms") or (state.get("created_ms") if number == 1 else None)
    status = state["status"]
    ended = state.get("finished_ms") if status not in documents.LIVE_STATUSES else None
    attempts.append(timeline.Attempt(number, queued, state.get("started_ms"), ended, status))
    return attempts


def _deliveries(state: dict[str, Any]) -> tuple[list[Delivery], list[Reuse]]:
    deliveries, reuses = [], []
    for entry in documents.callback_entries(state):
        tries = entry.get("tries") or []
        if isinstance(tries, dict):
            tries = []
        first_try = max(entry.get("attempts", 0) - len(tries), 0) + 1
        deliveries.append(
            Delivery(
                delivery_id=entry["delivery_id"],
                url=redact_url(entry.get("url")) or "",
                status=entry["status"],
                attempts=entry.get("attempts", 0),
                waiting=bool(entry.get("waiting")),
                created_at=iso(entry.get("created_ms")),
                updated_at=iso(entry.get("updated_ms")),
                tries=[
                    Try(first_try + i, iso(t.get("at_ms")), t.get("status_code"), t.get("error"))
                    for i, t in enumerate(tries)
                ],
                reuse=bool(entry.get("reuse")),
            )
        )
        if entry.get("reuse"):
            reuses.append(
                Reuse(
                    at=iso(entry.get("created_ms")),
                    verdict=entry.get("reuse_state", ""),
                    input_matches=entry.get("input_matches"),
                    cached_at=iso(entry.get("cached_ms")),
                    delivery_id=entry["delivery_id"],
                )
            )
    return deliveries, reuses


def _reuse_times(state: dict[str, Any]) -> list[float]:
    entries = documents.callback_entries(state)
    return [entry["created_ms"] for entry in entries if entry.get("reuse") and entry.get("created_ms")]


def build(task_id: str, tenant: str | None, fields: dict[str, str], now_ms: float) -> TaskPage:
    """The page of the task whose stored fields are ``fields`` (``task_id`` public)."""
    meta = json.loads(fields["meta"])
    states = {
        name[len(documents.STAGE_FIELD) :]: json.loads(value)
        for name, value in fields.items()
        if name.startswith(documents.STAGE_FIELD)
    }
    stages = []
    for name in sorted(states, key=lambda n: (states[n].get("created_ms", 0), n)):
        state = states[name]
        deliveries, reuses = _deliveries(state)
        stages.append(
            Stage(
                name=name,
                status=state["status"],
                attempt=state.get("attempt", 1),
                lost=state.get("lost") or 0,
                created_at=iso(state.get("created_ms")),
                started_at=iso(state.get("started_ms")),
                finished_at=iso(state.get("finished_ms")),
                duration=state.get("duration"),
                progress=state.get("progress"),
                progress_message=state.get("progress_message"),
                error=state.get("error"),
                input=JsonBlock.of(fields.get(documents.INPUT_FIELD + name), "{}"),
                output=JsonBlock.of(fields.get(documents.OUTPUT_FIELD + name), "(none)"),
                attempts=_attempts(state),
                deliveries=deliveries,
                reuses=reuses,
            )
        )
    latest = states.get(meta.get("last_task_name", ""))
    drawn = timeline.build(
        [(s.name, states[s.name].get("created_ms"), s.attempts, _reuse_times(states[s.name])) for s in stages], now_ms
    )
    return TaskPage(
        task_id=task_id,
        tenant=tenant,
        status=documents.TASK_STATUS.get(latest["status"]) if latest else None,
        created_at=iso(meta.get("created_ms")),
        updated_at=iso(meta.get("updated_ms")),
        latest_task_name=meta.get("last_task_name"),
        latest_callback_url=redact_url(meta.get("last_callback_url")),
        stages=stages,
        timeline=drawn,
    )


def add_next_tries(page: TaskPage, store_id: str, servers: QueueRedisMap, grace_ms: int) -> None:
    """When each queued delivery that already tried tries next: its watch entry is
    scored at its due time plus the grace (``watches.watch_delivery``), on the queue Redis
    of its stage's node. One pipelined ``ZSCORE`` per such
    delivery and server."""
    pending = [(s, d) for s in page.stages for d in s.deliveries if d.status == "queued" and d.attempts > 0]
    by_server: dict[int, tuple[Redis, list]] = {}
    for stage, delivery in pending:
        client = servers.for_task(stage.name).client
        by_server.setdefault(id(client), (client, []))[1].append((stage, delivery))
    for client, entries in by_server.values():
        with client.pipeline(transaction=False) as pipe:
            for stage, delivery in entries:
                pipe.zscore(keys.delivery_watch(), keys.watch_member(store_id, stage.name, delivery.delivery_id))
            scores = pipe.execute()
        for (_, delivery), score in zip(entries, scores, strict=True):
            if score is not None:
                delivery.next_try_at = iso(score - grace_ms)
