"""CPU time and connections of processes, read from /proc (Linux)."""

from __future__ import annotations

import os
import resource
from pathlib import Path


def _stat_fields(pid: int) -> list[str]:
    # /proc/<pid>/stat after the ")" that closes the command name: field 3 (state) onwards.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def child_pids(parent: int) -> list[int]:
    """gunicorn's worker processes: every process whose parent is the master."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(_stat_fields(int(stat.parent.name))[1]) == parent:
                children.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue  # a process that ended while we looked
    return children


def connections_per_process(port: int, pids: list[int]) -> list[int]:
    """Established TCP connections to ``port`` that each process holds (/proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # 01: ESTABLISHED
            inodes.add(f"socket:[{fields[9]}]")
    counts = []
    for pid in pids:
        try:
            counts.append(sum(1 for fd in Path(f"/proc/{pid}/fd").iterdir() if os.readlink(fd) in inodes))
        except OSError:
            counts.append(0)  # the process or one of its fds went away while we looked
    return counts


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy so far, all cores (/proc/stat, first line)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU time of our reaped children: the finished wrk runs (servers are reaped at the end)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time these processes used so far (stat fields 14 and 15)."""
    ticks = sum(int(fields[11]) + int(fields[12]) for fields in map(_stat_fields, pids))
    return ticks / os.sysconf("SC_CLK_TCK")
