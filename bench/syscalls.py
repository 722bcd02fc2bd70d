"""System calls per request of the reuse hit and of the floor: ``python bench/syscalls.py``.

Both under gunicorn's sync workers (bench/hit.py's ``start_sync_servers``: one request at a time
per process), each loaded with wrk for ``--duration`` seconds while ``strace -f -c`` is
attached to its workers. Printed: each system call's count per request, side by side.
On a VM a system call costs far more in place than in a loop (docs/PERFORMANCE.md,
"Fourth round"), so a call the hit makes and the floor does not is worth finding.
Needs ``strace`` (Debian: ``apt-get install strace``) and the right to attach to the
workers (root, or ``ptrace_scope`` 0). Not part of bench/run.py: strace slows the workers.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/syscalls.py`
from bench.hit import HIT_JSON, SYNC_WRK_THREADS, start_sync_servers  # noqa: E402 (needs the path above)
from bench.toolkit import options  # noqa: E402
from bench.toolkit.cpu import child_pids  # noqa: E402
from bench.toolkit.servers import Bench, prepare  # noqa: E402

#: A row of ``strace -c``'s table: "% time  seconds  usecs/call  calls  [errors]  syscall".
_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def count(bench: Bench, server: str, out: Path) -> dict[str, float]:
    """System calls per request of ``server``'s workers over one wrk run."""
    bench.load(server, "hit.lua", HIT_JSON, bench.args.warmup, wrk_threads=SYNC_WRK_THREADS)
    command = ["strace", "-f", "-c", "-o", str(out)]
    for pid in child_pids(bench.running[server].pid):
        command += ["-p", str(pid)]
    tracer = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    time.sleep(1)  # strace attaches
    result = bench.load(server, "hit.lua", HIT_JSON, bench.args.duration, wrk_threads=SYNC_WRK_THREADS)
    tracer.terminate()
    tracer.wait(30)
    calls = {}
    for line in out.read_text().splitlines():
        match = _ROW.match(line)
        if match and match[2] != "total":
            calls[match[2]] = int(match[1]) / result.requests
    print(f"  {server}: {result.requests:,} requests traced", flush=True)
    return calls


def main() -> int:
    args = options.parser(__doc__.split("\n\n")[0]).parse_args()
    if shutil.which("strace") is None:
        print("bench/syscalls.py needs strace (apt-get install strace)", file=sys.stderr)
        return 2
    if not prepare(needs_wrk=True):
        return 2
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp, Bench(args, Path(tmp)) as bench:
        bench.setup()
        servers = start_sync_servers(bench)
        counts = {label: count(bench, name, Path(tmp) / f"strace-{label}.txt") for label, name in servers.items()}
    names = sorted(set(counts["hit"]) | set(counts["floor"]), key=lambda name: -counts["hit"].get(name, 0))
    print(f"\n{'system call':16} {'hit':>8} {'floor':>8}   per request (sync workers)")
    for name in names:
        hit, floor = counts["hit"].get(name, 0.0), counts["floor"].get(name, 0.0)
        mark = "  <-" if abs(hit - floor) >= 0.5 else ""
        print(f"{name:16} {hit:8.2f} {floor:8.2f}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
