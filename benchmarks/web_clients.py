"""Poll jitter of a bench with its live page open in 10 browsers, against the same bench without.

Run: ``python benchmarks/web_clients.py [-k 10] [--clients 10] [--seconds 10]`` from the repository
root. One bench polls K simulated cyclers at 10 Hz (journal on; simulators in their own process).
In one run, three phases of equal length on that bench: no web server; the web server with no
client; the web server with N SSE clients (in their own process, as browsers would be, each
reading every snapshot). Reported per phase: poll-start jitter p50/p99 and missed polls, CPU of
the bench process, and snapshots/s each client received; then the ratios against the first phase.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import CpuWindow, jitter_ms
from benchmarks.harness import BenchDevice, make_bench, workdir, write_bench
from benchmarks.simfarm import SimDevice, SimFarm
from daq.web.server import BenchWebServer

CLIENTS = textwrap.dedent(
    """
    import asyncio, sys, aiohttp
    async def one(session, url, seconds, counts, i):
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as r:
            loop = asyncio.get_running_loop(); end = loop.time() + seconds
            async for line in r.content:
                if line.startswith(b"event: snapshot"):
                    counts[i] += 1
                if loop.time() > end:
                    return
    async def main(url, n, seconds):
        counts = [0] * n
        async with aiohttp.ClientSession() as s:
            await asyncio.gather(*(one(s, url, seconds, counts, i) for i in range(n)))
        print(" ".join(map(str, counts)))
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
    """
)


async def _phase(bench: Any, seconds: float) -> dict[str, float]:
    pollers = list(bench.pollers.values())
    for p in pollers:
        p.stats.lateness_s.clear()
    missed0 = sum(p.stats.missed for p in pollers)
    window = CpuWindow()
    await asyncio.sleep(seconds)
    window.stop()
    lateness = [x for p in pollers for x in p.stats.lateness_s]
    return {
        **jitter_ms(lateness),
        "missed_polls": sum(p.stats.missed for p in pollers) - missed0,
        "cpu_pct": window.cpu_pct,
    }


async def measure(k: int, clients: int, seconds: float) -> dict[str, dict[str, float]]:
    with SimFarm([SimDevice(f"sim-{i}", "cycler") for i in range(k)]) as farm, workdir("webclients") as folder:
        devices = [BenchDevice(f"cycler-{i}", "cycler", port, 0.1) for i, port in enumerate(farm.ports.values())]
        bench = make_bench(write_bench(folder, devices))
        await bench.start()
        web = BenchWebServer(bench, host="127.0.0.1", port=0)
        try:
            await asyncio.sleep(min(2.0, seconds / 4))  # warm-up
            results = {"no web server": await _phase(bench, seconds)}
            await web.start()
            results["web server, 0 clients"] = await _phase(bench, seconds)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CLIENTS, web.url + "api/v1/stream", str(clients), str(seconds + 1.0),
                stdout=subprocess.PIPE,
            )  # fmt: skip
            await asyncio.sleep(0.5)  # let the clients connect
            with_clients = await _phase(bench, seconds)
            out, _ = await proc.communicate()
            counts = [int(x) for x in out.split()]
            with_clients["snapshots/s per client (min)"] = min(counts) / (seconds + 1.0) if counts else 0.0
            results[f"web server, {clients} SSE clients"] = with_clients
        finally:
            await web.stop()
            await bench.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", "--devices", type=int, default=10, help="simulated cyclers at 10 Hz (default 10)")
    parser.add_argument("--clients", type=int, default=10, help="SSE clients (default 10)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase (default 10)")
    parser.add_argument("--smoke", action="store_true", help="2 devices, 2 clients, 1 s phases")
    args = parser.parse_args()
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    k, clients, seconds = (2, 2, 1.0) if args.smoke else (args.devices, args.clients, args.seconds)
    results = asyncio.run(measure(k, clients, seconds))
    base = results["no web server"]
    print(f"{k} simulated cyclers at 10 Hz, {seconds:g} s per phase, same bench and run\n")
    print("| phase | jitter p50 (ms) | jitter p99 (ms) | p99 / no web | missed | bench CPU % | snapshots/s/client |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        ratio = r["jitter_p99_ms"] / base["jitter_p99_ms"] if base["jitter_p99_ms"] else float("nan")
        per_client = r.get("snapshots/s per client (min)")
        print(
            f"| {name} | {r['jitter_p50_ms']:.2f} | {r['jitter_p99_ms']:.2f} | {ratio:.2f} | {r['missed_polls']} |"
            f" {r['cpu_pct']:.1f} | {'—' if per_client is None else f'{per_client:.1f}'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
