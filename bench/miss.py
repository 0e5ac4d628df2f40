"""The miss phase of bench/run: what a MISS adds over calling the upstream directly.

Every request is a miss: wrk's `fresh` mode sends the HIT load's ids in turn,
each request with a never-seen credential, and ayra-cache keys its cache on
the credential (pass-through credentials, no `upstream.api_key`). wrk runs
closed loop with one connection by default (`-c1`: one request at a time, so
latency is the path's own, not queueing), in alternating rounds.

Two upstreams:
- nginx serving the bodies as static files (one worker, open_file_cache): a
  fast, steady upstream, so the difference is the proxy's own; rows: direct,
  through ayra-cache (compression on, the default), and through nginx as a
  plain proxy (no cache, keep-alive upstream) as the reference;
- the stand-in, as before: direct, ayra-cache with compression on and off.

Imported by bench/run, whose helpers each function receives as `bench`.
"""

import os

import peers

# (upstream, row key, label)
ROWS = (
    ("static", "direct", "direct to nginx static files"),
    ("static", "ayra", "through ayra-cache, compression on"),
    ("static", "nginx_proxy", "through nginx, plain proxy"),
    ("standin", "direct", "direct to the stand-in"),
    ("standin", "ayra", "through ayra-cache, compression on"),
    ("standin", "ayra_plain", "through ayra-cache, compression off"),
)


def start_servers(bench, binaries, workdir, standin):
    nginx, ayra = binaries["nginx"], binaries["ayra-cache"]
    static = peers.NginxStatic(nginx, workdir, "nginx-static", standin)
    return {
        ("static", "direct"): static,
        ("static", "ayra"): bench.AyraCache(ayra, workdir, "ayra-miss-static", static.port, 1024 * bench.MIB),
        ("static", "nginx_proxy"): peers.NginxProxy(nginx, workdir, "nginx-proxy", static.port),
        ("standin", "direct"): standin,
        ("standin", "ayra"): bench.AyraCache(ayra, workdir, "ayra-miss", standin.port, 1024 * bench.MIB),
        ("standin", "ayra_plain"): bench.AyraCache(ayra, workdir, "ayra-miss-plain", standin.port, 1024 * bench.MIB,
                                                   compression=False),
    }


def one_run(bench, standin, server, key, round_no):
    """One wrk run of fresh-credential misses; the upstream calls it caused, where they can be counted."""
    upstream, row = key
    is_ayra = isinstance(server, bench.AyraCache)
    misses_before = server.stats().get("misses", 0) if is_ayra else 0
    standin.reset()
    prefix = f"sk_miss_{upstream}_{row}_{round_no}_{os.getpid()}"
    r = bench.run_wrk(server.port, "fresh", bench.MISS_DURATION, bench.MISS_CONNECTIONS,
                      min(bench.THREADS, bench.MISS_CONNECTIONS), prefix=prefix, pace_ms=bench.MISS_PACE_MS,
                      quiet=True)
    r["upstream_calls"] = standin.stats()["requests_total"] if upstream == "standin" else None
    r["ayra_misses"] = server.stats().get("misses", 0) - misses_before if is_ayra else None
    bench.log(f"miss round {round_no} {upstream:7} {row:11}: {r['rps']:7.0f} req/s  p50 {r['p50_us'] / 1000:.3f} ms  "
              f"p99 {r['p99_us'] / 1000:.3f} ms  errors {r['errors']}  other processes {r['foreign_pct']:.0f}%")
    return r


def phase(bench, binaries, workdir, standin, results):
    servers = start_servers(bench, binaries, workdir, standin)
    try:
        runs = {key: [] for key in servers}
        for round_no in range(1, bench.MISS_ROUNDS + 1):
            for key, server in servers.items():
                runs[key].append(one_run(bench, standin, server, key, round_no))
        out = {key: bench.summarise(value) for key, value in runs.items()}
        ayra_runs = [r for (_, row), rs in runs.items() if row.startswith("ayra") for r in rs]
        out["ayra_requests"] = sum(r["requests"] for r in ayra_runs)
        out["ayra_misses"] = sum(r["ayra_misses"] for r in ayra_runs)
        standin_runs = runs[("standin", "ayra")] + runs[("standin", "ayra_plain")]
        out["standin_calls"] = sum(r["upstream_calls"] for r in standin_runs)
        out["standin_requests"] = sum(r["requests"] for r in standin_runs)
        results["miss"] = out
    finally:
        for key, server in servers.items():
            if server is not standin:
                server.stop()
    standin.reset()


def report(bench, results, add, targets):
    miss = results.get("miss")
    if not miss:
        return
    pacing = (f", {bench.MISS_PACE_MS} ms pause before each request" if bench.MISS_PACE_MS
              else ", closed loop")
    add(f"(a) MISS LATENCY  every request a miss (the ids in turn, a never-seen credential each), "
        f"wrk -c{bench.MISS_CONNECTIONS}{pacing}, {bench.MISS_ROUNDS} alternating round(s) x "
        f"{bench.MISS_DURATION} s; medians")
    add(f"  {'':40}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}{'errors':>7}   added p50 / p99 ms")
    added = {}
    for upstream, row, label in ROWS:
        s, direct = miss[(upstream, row)], miss[(upstream, "direct")]
        extra = ""
        if row != "direct":
            added[(upstream, row)] = (s["p50_ms"] - direct["p50_ms"], s["p99_ms"] - direct["p99_ms"])
            extra = f"   {added[(upstream, row)][0]:+.3f} / {added[(upstream, row)][1]:+.3f}"
        if row == "direct":
            add(f"  upstream: {'nginx serving static files' if upstream == 'static' else 'the stand-in'}")
        add(f"    {label:38}{s['p50_ms']:9.3f}{s['p99_ms']:9.3f}{s['rps']:9.0f}{s['errors']:7d}{extra}")
    add(f"  ayra-cache counted {miss['ayra_misses']} misses for {miss['ayra_requests']} completed requests; "
        f"the stand-in {miss['standin_calls']} calls for {miss['standin_requests']} "
        "(wrk does not count the requests in flight at its end)")
    add(bench.noise_line([miss[(u, r)] for u, r, _ in ROWS]))
    add("")
    p50, p99 = added[("static", "ayra")]
    reference = added[("static", "nginx_proxy")]
    targets.append(("miss adds <= 0.10 ms at p50 (static upstream, compression on)", f"{p50:+.3f} ms", p50 <= 0.10,
                    f"{p50 - 0.10:.3f} ms over" if p50 > 0.10 else ""))
    targets.append(("miss added p99 (static upstream; nginx plain proxy adds)",
                    f"{p99:+.3f} vs {reference[1]:+.3f} ms", None, ""))
