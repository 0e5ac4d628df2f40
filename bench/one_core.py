"""One core each in bench/run: the proxy on one CPU with one worker, wrk on another with one thread.

In the HITS phase wrk, the proxy and the stand-in share both CPUs, and wrk
takes about half of them: the ratio there is (wrk's CPU per request + nginx's)
over (wrk's + ayra-cache's), which the client's share pulls towards 1 and the
host's scheduling moves from round to round. Here the proxy has a core to
itself and wrk the other, each with one thread (no time slicing within
either), so req/s is the proxy's own HITs per core and p99 is its own tail.
nginx (tuned) runs `worker_processes 1`, ayra-cache `server.worker_threads = 1`,
the ceiling (bench/tools ayra-ceiling) one runtime: HITs per core for each.

Imported by bench/run, whose helpers each function receives as `bench`.
"""

import os
import shutil

WRK_CPU = 0


def phase(bench, binaries, workdir, standin, results):
    if bench.CPUS < 2 or not shutil.which("taskset"):
        bench.log("one_core: needs 2 CPUs and taskset; skipped")
        return
    proxy_cpu = sorted(os.sched_getaffinity(0))[-1]
    servers = {
        "ayra": bench.AyraCache(binaries["ayra-cache"], workdir, "ayra-one-core", standin.port, 1024 * bench.MIB,
                                workers=1),
        "nginx": bench.Nginx(binaries["nginx"], workdir, "nginx-one-core", standin.port, workers=1,
                             tuning=bench.NGINX_TUNING, reuseport=bench.NGINX_REUSEPORT),
        "ceiling": bench.peers.Ceiling(binaries["ayra-ceiling"], workdir, "ceiling-one-core", standin.port,
                                       workers=1),
    }
    try:
        for key, server in servers.items():
            bench.pin(server.pids(), proxy_cpu)
            bench.warm_up(server, f"{key} (one core)")
            bench.run_wrk(server.port, "hits", 1, bench.CONNECTIONS, 1, cpu=WRK_CPU)  # untimed
        standin.reset()
        runs = {key: [] for key in servers}
        for round_no in range(1, bench.ROUNDS + 1):
            for key, server in servers.items():
                r = bench.run_wrk(server.port, "hits", bench.DURATION, bench.CONNECTIONS, 1, pids=server.pids(),
                                  quiet=True, cpu=WRK_CPU)
                runs[key].append(r)
                bench.log(f"one-core round {round_no} {key:7}: {r['rps']:7.0f} req/s  p50 {r['p50_us'] / 1000:.3f} ms"
                          f"  p99 {r['p99_us'] / 1000:.3f} ms  cpu {r['cpu_pct']:.0f}%  errors {r['errors']}  "
                          f"other processes {r['foreign_pct']:.0f}%")
        out = {key: bench.summarise(value) for key, value in runs.items()}
        out["upstream_calls"] = standin.stats()["requests_total"]
        out["pair_ratios"] = [a["rps"] / n["rps"] for a, n in zip(runs["ayra"], runs["nginx"])]
        out["proxy_cpu"] = proxy_cpu
        results["one_core"] = out
    finally:
        for server in servers.values():
            server.stop()


def report(bench, results, add, targets):
    one = results.get("one_core")
    if not one:
        return
    a, n = one["ayra"], one["nginx"]
    add(f"ONE CORE EACH  the proxy pinned to CPU {one['proxy_cpu']} with one worker, wrk -t1 -c{bench.CONNECTIONS} "
        f"pinned to CPU {WRK_CPU}; {bench.IDS} ids, {bench.ROUNDS} alternating rounds x {bench.DURATION} s; medians")
    add(f"  {'':38}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'CPU %':>7}{'user':>7}{'sys':>7}{'errors':>7}")
    rows = [("ayra-cache (worker_threads = 1)", a), ("nginx tuned (worker_processes 1)", n)]
    if "ceiling" in one:
        rows.append(("ceiling (one runtime)", one["ceiling"]))
    for label, s in rows:
        add(f"  {label:38}{s['rps']:8.0f}{s['p50_ms']:8.3f}{s['p99_ms']:8.3f}{s['cpu_pct']:7.0f}"
            f"{s['user_us']:7.1f}{s['sys_us']:7.1f}{s['errors']:7d}")
    ratio = a["rps"] / n["rps"]
    p99_ratio = a["p99_ms"] / n["p99_ms"]
    add(f"  {'ratio ayra/nginx tuned':38}{ratio:7.2f}x{a['p50_ms'] / n['p50_ms']:7.2f}x{p99_ratio:7.2f}x")
    if "ceiling" in one:
        c = one["ceiling"]
        add(f"  {'ratio ayra/ceiling':38}{a['rps'] / c['rps']:7.2f}x{a['p50_ms'] / c['p50_ms']:7.2f}x"
            f"{a['p99_ms'] / c['p99_ms']:7.2f}x")
    for line in bench.rounds_lines(a, n, one["pair_ratios"]):
        add(line)
    add(f"  upstream calls during the timed rounds: {one['upstream_calls']} (0 = every request was a HIT)")
    add(bench.noise_line([a, n]))
    add("")
    targets.append(("hit throughput >= 1.3x nginx tuned, one core each", f"{ratio:.2f}x", ratio >= 1.3,
                    f"needs {1.3 / ratio:.2f}x more" if ratio < 1.3 else ""))
    targets.append(("hit p99 <= nginx tuned's, one core each", f"{a['p99_ms']:.3f} vs {n['p99_ms']:.3f} ms",
                    p99_ratio <= 1.0, f"{p99_ratio:.2f}x nginx's" if p99_ratio > 1.0 else ""))
