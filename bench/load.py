"""bench/run's load: asyncio clients for warm-ups and fills, wrk runs, and the CPU accounting around them."""

import asyncio
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

from settings import *  # noqa: F401,F403
from servers import CHILDREN, cpu_seconds, cpu_split, proc_tree


# ---------------------------------------------------------------- HTTP load (asyncio, for warm-up, stampede, fill)

def request_bytes(port, path, headers=()):
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {TOKEN}\r\n{extra}\r\n").encode()


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    else:
        body = await reader.read()
    return status, headers, body


async def drive(port, next_path, connections, on_response, request_headers=()):
    """`connections` keep-alive connections; each sends next_path() until it returns None."""

    async def worker():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                path = next_path()
                if path is None:
                    return
                writer.write(request_bytes(port, path, request_headers))
                status, headers, body = await read_response(reader)
                on_response(path, status, headers, body)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))


def run_paths(port, paths, connections=8, headers=()):
    """GET every path once; returns [(path, status, headers, body_len)]."""
    queue = list(reversed(paths))
    results = []
    asyncio.run(drive(port, lambda: queue.pop() if queue else None, connections,
                      lambda path, status, headers, body: results.append((path, status, headers, len(body))),
                      headers))
    return results


def cache_verdict(headers):
    return headers.get("x-cache") or headers.get("x-cache-status") or "-"


def warm_up(server, label):
    paths = [f"/v1/conversations/conv_bench_{i:04d}" for i in range(IDS)]
    first = run_paths(server.port, paths)
    bad = [r for r in first if r[1] != 200]
    if bad:
        sys.exit(f"bench: warm-up of {label}: {len(bad)} non-200 answers, e.g. {bad[0][:2]}")
    second = run_paths(server.port, paths)
    verdicts = {}
    for _, status, headers, _ in second:
        verdicts[cache_verdict(headers)] = verdicts.get(cache_verdict(headers), 0) + 1
    if verdicts.get("HIT", 0) != IDS:
        sys.exit(f"bench: warm-up of {label}: the second pass was not all HITs: {verdicts}")
    log(f"warm-up {label}: {IDS} ids fetched, second pass {verdicts}")
    return verdicts


# ---------------------------------------------------------------- wrk

def system_busy_seconds():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def our_cpu_seconds():
    """CPU used by this script and everything it started (live children, reaped ones like wrk)."""
    pids = []
    for child in CHILDREN:
        pids += proc_tree(child.pid)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return cpu_seconds(pids) + children.ru_utime + children.ru_stime + own.ru_utime + own.ru_stime


def foreign_load(seconds=1.0):
    """CPU % (100 = one core) used by processes this script did not start, over `seconds`."""
    busy, ours = system_busy_seconds(), our_cpu_seconds()
    time.sleep(seconds)
    return 100.0 * ((system_busy_seconds() - busy) - (our_cpu_seconds() - ours)) / seconds


def wait_idle(pids, label, timeout=300.0):
    """Waits until these processes stop using CPU (e.g. ayra-cache compressing
    the variants of what was just stored, in the background)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = cpu_seconds(pids)
        time.sleep(0.5)
        if cpu_seconds(pids) - before < 0.02:  # under 4% of one core
            waited = time.monotonic() - started
            if waited > 1.0:
                log(f"{label}: waited {waited:.0f} s for background work to finish")
            return waited
    log(f"{label}: still busy after {timeout:.0f} s; measuring anyway")
    return timeout


def wait_quiet():
    """With BENCH_WAIT_QUIET=N: wait up to N s for other processes to leave the CPUs alone."""
    if WAIT_QUIET <= 0:
        return
    deadline = time.monotonic() + WAIT_QUIET
    busy = foreign_load(0.5)
    while busy > 10 and time.monotonic() < deadline:
        busy = foreign_load(1.0)
    if busy > 10:
        log(f"still {busy:.0f}% CPU used by other processes after waiting {WAIT_QUIET} s; measuring anyway")


def run_wrk(port, mode, duration, connections, threads, prefix="", pids=(), pace_ms=0, quiet=False,
            accept_encoding="", cpu=None):
    if quiet:
        wait_quiet()
    env = dict(os.environ, BENCH_MODE=mode, BENCH_IDS=str(IDS), BENCH_PREFIX=prefix, BENCH_TOKEN=TOKEN,
               BENCH_PACE_MS=str(pace_ms), BENCH_ACCEPT_ENCODING=accept_encoding)
    args = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "5s",
            "-s", WRK_LUA, f"http://127.0.0.1:{port}"]
    if cpu is not None:
        args = ["taskset", "-c", str(cpu)] + args
    user_before, sys_before = cpu_split(pids)
    busy_before, ours_before = system_busy_seconds(), our_cpu_seconds()
    started = time.monotonic()
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    user_after, sys_after = cpu_split(pids)
    user, system = user_after - user_before, sys_after - sys_before
    cpu = user + system
    foreign = (system_busy_seconds() - busy_before) - (our_cpu_seconds() - ours_before)
    m = re.search(r"BENCH_RESULT (\{.*\})", done.stdout)
    if done.returncode != 0 or not m:
        sys.exit(f"bench: wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result = json.loads(m.group(1))
    seconds = result["duration_us"] / 1e6
    result["rps"] = result["requests"] / seconds
    result["errors"] = sum(result[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout"))
    result["cpu_pct"] = 100.0 * cpu / wall if pids else None
    # CPU per request (the requests wrk completed; the run lasts `wall`, wrk counts `seconds`)
    completed_per_wall = result["requests"] * wall / seconds
    result["user_us"] = 1e6 * user / max(completed_per_wall, 1)
    result["sys_us"] = 1e6 * system / max(completed_per_wall, 1)
    result["foreign_pct"] = max(0.0, 100.0 * foreign / wall)
    result["resp_bytes"] = result["bytes"] / max(result["requests"], 1)
    return result


def median(values):
    return statistics.median(values) if values else float("nan")


def summarise(runs):
    return {
        "rps": median([r["rps"] for r in runs]),
        "p50_ms": median([r["p50_us"] / 1000 for r in runs]),
        "p99_ms": median([r["p99_us"] / 1000 for r in runs]),
        "cpu_pct": median([r["cpu_pct"] for r in runs if r["cpu_pct"] is not None]),
        "user_us": median([r["user_us"] for r in runs]),
        "sys_us": median([r["sys_us"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "resp_bytes": median([r["resp_bytes"] for r in runs]),
        "foreign_max": max(r["foreign_pct"] for r in runs),
        "runs": runs,
    }
