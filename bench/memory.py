"""The memory phases of bench/run: RSS against the bytes cached, identity only and with compressed copies; the byte bound.

memory: a fresh ayra-cache (cache.max_bytes 1 GiB) stores BENCH_MEM_ENTRIES
(50,000) distinct entries; RSS is read against the bytes cached (the bodies
served, and the cache's own weight from /admin/stats, which is
`ayra_cache_bytes`). Then every entry is read with `Accept-Encoding: br,
gzip`, so each gets its compressed copies (lazily, in the background, a few
at a time: passes over the entries not yet answered `br` until all are, or
for at most COMPRESS_TIMEOUT_S),
and RSS is read again against the weight, which now counts those copies.

bound: a fresh ayra-cache with a small cache.max_bytes is offered 4 times
that in distinct entries; the weight must stay within it and RSS near it.

Imported by bench/run, whose helpers each function receives as `bench`.
"""

import asyncio
import os
import time

# The compressed reads stop after this long even if some entries are still not compressed (reported).
COMPRESS_TIMEOUT_S = 900
# Few connections: a HIT starts an entry's compression only when one of the
# (one per core) slots is free, so a flood of reads mostly finds them busy.
COMPRESS_READ_CONNECTIONS = 2


def fill(bench, port, prefix, count=None, until_bytes=None):
    """Distinct ids through the proxy until `count` entries are stored or `until_bytes` of bodies were offered."""
    state = {"next": 0, "stored": 0, "stored_bytes": 0, "offered_bytes": 0, "other": {}}

    def next_path():
        if count is not None and state["next"] >= count:
            return None
        if until_bytes is not None and state["offered_bytes"] >= until_bytes:
            return None
        state["next"] += 1
        return f"/v1/conversations/{prefix}_{state['next'] - 1:07d}"

    def on_response(path, status, headers, body):
        state["offered_bytes"] += len(body)
        if status == 200 and "stored" in headers.get("cache-status", ""):
            state["stored"] += 1
            state["stored_bytes"] += len(body)
        else:
            verdict = f"{status} {headers.get('cache-status', '')}"
            state["other"][verdict] = state["other"].get(verdict, 0) + 1

    started = time.monotonic()
    asyncio.run(bench.drive(port, next_path, bench.FILL_CONNECTIONS, on_response))
    state["seconds"] = time.monotonic() - started
    state["requests"] = state["next"]
    return state


def settle(bench, ayra):
    # Background work (compressed variants of what was stored) must finish,
    # and moka applies evictions in batches: wait for an idle process, then read.
    waited = bench.wait_idle(ayra.pids(), ayra.name)
    ayra.stats()
    time.sleep(0.5)
    return waited


def snapshot(bench, ayra):
    """RSS (and peak) and the cache's own accounting, once the process is idle."""
    settle(bench, ayra)
    return {"rss": ayra.rss_kib() * 1024, "rss_peak": ayra.rss_kib("VmHWM") * 1024, "stats": ayra.stats()}


def read_compressed(bench, ayra, paths):
    """Reads `paths` with Accept-Encoding: br, gzip until every answer comes br-encoded (bounded in time)."""
    pending, passes, started = list(paths), 0, time.monotonic()
    while pending and time.monotonic() - started < COMPRESS_TIMEOUT_S:
        passes += 1
        answers = bench.run_paths(ayra.port, pending, connections=COMPRESS_READ_CONNECTIONS,
                                  headers=[("Accept-Encoding", "br, gzip")])
        pending = [path for path, status, headers, _ in answers if headers.get("content-encoding") != "br"]
        bench.log(f"memory: compressed read pass {passes}: {len(answers) - len(pending)} of {len(answers)} came br")
        if pending:
            bench.wait_idle(ayra.pids(), f"{ayra.name} (compressing)")
    return {"passes": passes, "uncompressed": len(pending), "seconds": time.monotonic() - started}


def phase_memory(bench, binaries, workdir, standin, results):
    standin.reset()
    ayra = bench.AyraCache(binaries["ayra-cache"], workdir, "ayra-memory", standin.port, bench.MEM_MAX_BYTES)
    try:
        idle = ayra.rss_kib() * 1024
        prefix = f"conv_mem_{os.getpid()}"
        filled = fill(bench, ayra.port, prefix, count=bench.MEM_ENTRIES)
        identity = snapshot(bench, ayra)
        bench.log(f"memory: {filled['stored']} entries stored, {filled['stored_bytes'] / bench.MIB:.1f} MiB of bodies, "
                  f"RSS {identity['rss'] / bench.MIB:.1f} MiB (idle {idle / bench.MIB:.1f} MiB), "
                  f"in {filled['seconds']:.1f} s; other answers {filled['other']}")
        paths = [f"/v1/conversations/{prefix}_{i:07d}" for i in range(bench.MEM_ENTRIES)]
        compressed_reads = read_compressed(bench, ayra, paths)
        compressed = snapshot(bench, ayra)
        bench.log(f"memory: after the compressed reads RSS {compressed['rss'] / bench.MIB:.1f} MiB, "
                  f"stats {compressed['stats']}")
        results["memory"] = {"entries_offered": bench.MEM_ENTRIES, "stored": filled["stored"],
                             "bytes": filled["stored_bytes"], "other": filled["other"], "rss_idle": idle,
                             "seconds": filled["seconds"], "identity": identity, "compressed": compressed,
                             "compressed_reads": compressed_reads}
    finally:
        ayra.stop()
    standin.reset()


def phase_bound(bench, binaries, workdir, standin, results):
    standin.reset()
    ayra = bench.AyraCache(binaries["ayra-cache"], workdir, "ayra-bound", standin.port, bench.BOUND_MAX)
    try:
        filled = fill(bench, ayra.port, f"conv_bound_{os.getpid()}", until_bytes=bench.BOUND_FACTOR * bench.BOUND_MAX)
        state = snapshot(bench, ayra)
        out = dict(state, max_bytes=bench.BOUND_MAX, offered=filled["offered_bytes"], requests=filled["requests"],
                   other=filled["other"])
        bench.log(f"bound: offered {filled['offered_bytes'] / bench.MIB:.1f} MiB in {filled['requests']} entries to a "
                  f"{bench.BOUND_MAX / bench.MIB:.0f} MiB cache: RSS {state['rss'] / bench.MIB:.1f} MiB, "
                  f"stats {state['stats']}")
        results["bound"] = out
    finally:
        ayra.stop()
    standin.reset()


def fmt_mib(n):
    return f"{n / (1024 * 1024):.1f} MiB"


def report_memory(bench, memory, add, targets):
    b, idle = memory["bytes"], memory["rss_idle"]
    add(f"(c) MEMORY  {memory['stored']} distinct entries stored (cache.max_bytes {fmt_mib(bench.MEM_MAX_BYTES)}); "
        f"RSS idle {fmt_mib(idle)}")
    add(f"  bodies served (identity) {fmt_mib(b)}, {b / max(memory['stored'], 1):.0f} B each")
    add(f"  {'':34}{'bytes cached':>13}{'RSS':>12}{'peak':>12}{'RSS-bytes':>12}{'RSS/bytes':>10}{'entries':>9}")
    reads = memory["compressed_reads"]
    for key, label in (("identity", "after the fill (identity only)"),
                       ("compressed", "after reads with br, gzip")):
        s = memory[key]
        weight = s["stats"].get("bytes", 0)
        add(f"  {label:34}{fmt_mib(weight):>13}{fmt_mib(s['rss']):>12}{fmt_mib(s['rss_peak']):>12}"
            f"{fmt_mib(s['rss'] - weight):>12}{s['rss'] / max(weight, 1):10.2f}{s['stats'].get('entries', '?'):>9}")
        limit = 1.2 * weight + 30e6
        targets.append((f"RSS <= 1.2 x bytes cached + 30 MB, {label.split(' (')[0]}",
                        f"{fmt_mib(s['rss'])} vs {fmt_mib(limit)}",
                        s["rss"] <= limit, f"{fmt_mib(s['rss'] - limit)} over" if s["rss"] > limit else ""))
    add("  bytes cached: the cache's own weight (/admin/stats bytes = ayra_cache_bytes): bodies, compressed copies, "
        "headers, bookkeeping")
    add(f"  compressed reads: {reads['passes']} pass(es) in {reads['seconds']:.0f} s, "
        f"{reads['uncompressed']} entries still not br at the end")
    if memory["other"]:
        add(f"  answers not stored: {memory['other']}")
    add("")
    rss = memory["identity"]["rss"]
    limit = 1.2 * b + 30e6
    targets.append(("RSS <= 1.2 x bodies served + 30 MB", f"{fmt_mib(rss)} vs {fmt_mib(limit)}", rss <= limit,
                    f"{fmt_mib(rss - limit)} over" if rss > limit else ""))


def report_bound(bench, bound, add, targets):
    m, rss = bound["max_bytes"], bound["rss"]
    stats = bound["stats"]
    add(f"(d) BOUND  cache.max_bytes {fmt_mib(m)}, offered {fmt_mib(bound['offered'])} "
        f"({bound['offered'] / m:.1f}x) in {bound['requests']} distinct entries")
    add(f"  cache's own weight {fmt_mib(stats.get('bytes', 0))} in {stats.get('entries', '?')} entries; "
        f"RSS after {fmt_mib(rss)} (peak {fmt_mib(bound['rss_peak'])}); RSS / max_bytes = {rss / m:.2f}")
    if bound["other"]:
        add(f"  answers not stored: {bound['other']}")
    add("")
    limit = 1.2 * m + 30e6
    weight_ok = stats.get("bytes", 0) <= m
    targets.append((f"bound holds at {bench.BOUND_FACTOR}x offered (RSS <= 1.2 x max_bytes + 30 MB)",
                    f"{fmt_mib(rss)} vs {fmt_mib(limit)}", rss <= limit and weight_ok,
                    ("" if rss <= limit else f"{fmt_mib(rss - limit)} over") + ("" if weight_ok else " weight over max_bytes")))


def report(bench, results, add, targets):
    if results.get("memory"):
        report_memory(bench, results["memory"], add, targets)
    if results.get("bound"):
        report_bound(bench, results["bound"], add, targets)
