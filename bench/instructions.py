"""Instructions per destroy of gateways, counted by callgrind: a measure that does not drift with the load
of a shared machine, as CPU time does.

    python -m bench.instructions NAME=SERVER[@CHECKOUT] [NAME=SERVER[@CHECKOUT] ...] [--call statusnet]
                                 [--count 2000] [--warmup 500] [--concurrency 16] [--auth oauth1]
                                 [--store-miss]

SERVER and CHECKOUT are as for ``bench.compare`` (``memory``, ``sqlite``, ``redis``, ``proxy`` or
``same-calls``; a directory holding another version of the project). One after the other, each server runs
under ``valgrind --tool=callgrind`` against an emulator of its own, instrumented only once ``--warmup``
destroys are done; its counters are read after ``--count`` more, and the instructions of every thread of the
process are divided by ``--count``. Repeated runs of one checkout agree to within about half a per cent; a
run takes a minute or two for each server.
Needs ``valgrind`` and ``callgrind_control`` on the ``PATH``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.compare import Side, server_command
from bench.run import Process

_TOTALS = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


def count(side: Side, args: argparse.Namespace, log_dir: Path) -> float:
    """Instructions per measured destroy of one server."""
    total = args.warmup + args.count
    emulator = Process("emulator", ["bench.servers", "emulator", "--events", str(total)], log_dir).ready()
    out = log_dir / f"{side.name}.callgrind"
    # Nothing is instrumented until the warm-up is over: the start-up and warm-up then run several times
    # faster, and are not counted either way.
    wrapper = (
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}.%p",
        "--dump-instr=no",
        "--instr-atstart=no",
    )
    command = server_command(side, emulator.url, range(total), args, log_dir)
    server = Process(side.name, command, log_dir, cwd=side.checkout, wrapper=wrapper)
    try:
        server.ready()
        auth = "bearer" if side.is_proxy else args.auth
        load = subprocess.Popen(
            [sys.executable, "-m", "bench.load", "--base", server.url, "--call", args.call, "--auth", auth,
             "--start", "0", "--warmup", str(args.warmup), "--count", str(args.count),
             "--concurrency", str(args.concurrency)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        assert load.stdin is not None and load.stdout is not None
        if load.stdout.readline().strip() != b"WARM":
            raise RuntimeError(f"{side.name}: the load generator failed during the warm-up")
        for control in ("--instr=on", "--zero"):
            subprocess.run(["callgrind_control", control, str(server.pid)], check=True, capture_output=True)
        load.stdin.write(b"go\n")
        load.stdin.flush()
        result = load.stdout.readline()
        if load.wait() != 0 or b'"errors":{}' not in result:
            raise RuntimeError(f"{side.name}: the measured destroys did not all succeed: {result!r}")
        subprocess.run(["callgrind_control", "--dump=measured", str(server.pid)], check=True, capture_output=True)
    finally:
        server.stop()
        emulator.stop()
    [dump] = out.parent.glob(f"{out.name}.{server.pid}.1")
    found = _TOTALS.search(dump.read_bytes())
    if found is None:
        raise RuntimeError(f"no instruction total in {dump}")
    return int(found.group(1)) / args.count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("sides", type=Side.parse, nargs="+", metavar="NAME=SERVER[@CHECKOUT]")
    parser.add_argument("--call", choices=("v1.1", "statusnet"), default="statusnet")
    parser.add_argument("--count", type=int, default=2000, help="measured destroys (default 2000)")
    parser.add_argument("--warmup", type=int, default=500, help="destroys before counting (default 500)")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--auth", choices=("bearer", "oauth1"), default="bearer", help="how the gateways are called")
    parser.add_argument("--store-miss", action="store_true", help="gateways start without the messages in store")
    args = parser.parse_args(argv)
    if len({side.name for side in args.sides}) != len(args.sides):
        parser.error("every side needs a name of its own")
    first: float | None = None
    with tempfile.TemporaryDirectory(prefix="dmgw-instructions-") as scratch:
        for side in args.sides:
            per_destroy = count(side, args, Path(scratch))
            first = first or per_destroy
            print(f"{side.name:<12} instructions/destroy {per_destroy:12,.0f}  / {args.sides[0].name}: "
                  f"{per_destroy / first:.3f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
