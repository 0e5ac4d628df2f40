"""The paced phase of bench/run: HIT latency at a fixed offered load below saturation (open loop).

wrk is a closed loop: each connection sends its next request when the last
answer arrives, so at saturation p99 mostly mirrors throughput, and a stall
of the server holds back the requests that would have measured it
(coordinated omission). Here `ayra-paced` (bench/tools) offers a fixed rate,
BENCH_PACED_FRACTION % (60) of the slowest server's saturated req/s in the
HITS phase (or BENCH_PACED_RATE), to every server in alternating rounds, and
times each request from when it was due, not from when it went out. Its
`late` figure is the client's own precision on these shared CPUs (how late a
connection that was waiting for a slot woke to send it); `backlog` is the
share of requests that found every connection busy at their due time (the
server was behind, or the client was not scheduled in time).

Imported by bench/run, whose helpers each function receives as `bench`.
"""

import json
import os
import re
import subprocess
import sys
import time

import peers

LABELS = {
    "ayra": "ayra-cache (log.level=warn)",
    "nginx_tuned": "nginx tuned (open_file_cache)",
    "ceiling": "ceiling (plain hyper, runtime per CPU)",
    "nginx": "nginx untuned",
}


def run_paced(bench, tool, paths_file, port, rate, pids):
    """One ayra-paced run; its JSON result plus the server's CPU time over it."""
    bench.wait_quiet()
    args = [tool, "--target", f"127.0.0.1:{port}", "--paths-file", paths_file, "--rate", f"{rate:.0f}",
            "--duration", str(bench.PACED_DURATION), "--warmup", "1", "--connections", str(bench.PACED_CONNECTIONS),
            "--header", f"Authorization: Bearer {bench.TOKEN}"]
    user_before, sys_before = bench.cpu_split(pids)
    busy_before, ours_before = bench.system_busy_seconds(), bench.our_cpu_seconds()
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True)
    wall = time.monotonic() - started
    user_after, sys_after = bench.cpu_split(pids)
    foreign = (bench.system_busy_seconds() - busy_before) - (bench.our_cpu_seconds() - ours_before)
    m = re.search(r"PACED_RESULT (\{.*\})", done.stdout)
    if done.returncode != 0 or not m:
        sys.exit(f"bench: ayra-paced failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    r = json.loads(m.group(1))
    cpu = (user_after - user_before) + (sys_after - sys_before)
    r["cpu_pct"] = 100.0 * cpu / wall
    r["cpu_us"] = 1e6 * cpu / max(r["sent"], 1)  # every request sent, warm-up included, over the whole run
    r["errors"] = r["non_200"] + r["io_errors"]
    r["backlog_pct"] = 100.0 * r["backlogged"] / max(r["measured"], 1)
    r["foreign_pct"] = max(0.0, 100.0 * foreign / wall)
    return r


def offered_rate(bench, results, servers):
    """PACED_RATE, else PACED_FRACTION % of the slowest saturated req/s (from HITS, else a 2 s wrk each)."""
    if bench.PACED_RATE > 0:
        return bench.PACED_RATE, "BENCH_PACED_RATE"
    hits = results.get("hits", {})
    saturated = {key: hits[key]["rps"] for key in servers if key in hits}
    for key, server in servers.items():
        if key not in saturated:
            saturated[key] = bench.run_wrk(server.port, "hits", 2, bench.CONNECTIONS, bench.THREADS)["rps"]
    slowest = min(saturated, key=saturated.get)
    rate = saturated[slowest] * bench.PACED_FRACTION / 100
    return rate, f"{bench.PACED_FRACTION}% of {LABELS[slowest]}'s {saturated[slowest]:.0f} req/s saturated"


def phase(bench, tools, workdir, standin, servers, results):
    """`servers`: key -> a warm server, for the keys of LABELS that ran."""
    servers = {key: servers[key] for key in LABELS if key in servers}
    paths = [f"/v1/conversations/{conv_id}" for conv_id in peers.bench_ids()]
    paths_file = peers.write_lines(os.path.join(workdir, "paced-paths.txt"), paths)
    rate, basis = offered_rate(bench, results, servers)
    bench.log(f"paced: offering {rate:.0f} req/s ({basis})")
    standin.reset()
    runs = {key: [] for key in servers}
    for round_no in range(1, bench.PACED_ROUNDS + 1):
        for key, server in servers.items():
            r = run_paced(bench, tools["ayra-paced"], paths_file, server.port, rate, server.pids())
            runs[key].append(r)
            bench.log(f"paced round {round_no} {key:11}: {r['achieved_rps']:7.0f} of {rate:.0f} req/s  "
                      f"p50 {r['latency_p50_us'] / 1000:.3f} ms  p99 {r['latency_p99_us'] / 1000:.3f} ms  "
                      f"client late p99 {r['late_p99_us']:.0f} us  backlog {r['backlog_pct']:.1f}%  errors {r['errors']}  "
                      f"other processes {r['foreign_pct']:.0f}%")
    fields = ("achieved_rps", "latency_p50_us", "latency_p90_us", "latency_p99_us", "latency_p999_us",
              "latency_max_us", "from_send_p50_us", "from_send_p99_us", "late_p99_us", "backlog_pct", "cpu_pct",
              "cpu_us")
    out = {"rate": rate, "basis": basis, "upstream_calls": standin.stats()["requests_total"], "servers": {}}
    for key, value in runs.items():
        s = {field: bench.median([r[field] for r in value]) for field in fields}
        s["errors"] = sum(r["errors"] for r in value)
        s["foreign_max"] = max(r["foreign_pct"] for r in value)
        s["runs"] = value
        out["servers"][key] = s
    results["paced"] = out


def report(bench, results, add, targets):
    paced = results.get("paced")
    if not paced:
        return
    add(f"PACED HITS  open loop at {paced['rate']:.0f} req/s offered ({paced['basis']}), ayra-paced "
        f"{bench.PACED_CONNECTIONS} connections, latency from each request's due time, "
        f"{bench.PACED_ROUNDS} alternating round(s) x {bench.PACED_DURATION} s; medians")
    add(f"  {'':40}{'req/s':>7}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'p99.9':>8}{'max ms':>8}"
        f"{'sent p50':>9}{'p99':>7}{'CPU %':>6}{'us/req':>7}{'late':>6}{'backlog':>8}{'errors':>7}")
    servers = paced["servers"]
    for key, s in servers.items():
        add(f"  {LABELS[key]:40}{s['achieved_rps']:7.0f}{s['latency_p50_us'] / 1000:8.3f}"
            f"{s['latency_p90_us'] / 1000:8.3f}{s['latency_p99_us'] / 1000:8.3f}{s['latency_p999_us'] / 1000:8.3f}"
            f"{s['latency_max_us'] / 1000:8.2f}{s['from_send_p50_us'] / 1000:9.3f}{s['from_send_p99_us'] / 1000:7.3f}"
            f"{s['cpu_pct']:6.0f}{s['cpu_us']:7.1f}{s['late_p99_us']:6.0f}"
            f"{s['backlog_pct']:7.1f}%{s['errors']:7d}")
    add("  p50..max: from each request's due time; sent p50/p99: from when it went out (wrk2's uncorrected, ms); "
        "us/req: the server's CPU per request at this load;")
    add("  late: the client's own precision, p99 of how late (us) a waiting connection sent; backlog: requests that "
        "found all connections busy when due")
    a = servers.get("ayra")
    for key in ("nginx_tuned", "ceiling", "nginx"):
        if a and key in servers:
            s = servers[key]
            add(f"  ratio ayra / {LABELS[key].split(' (')[0]:14} p50 {a['latency_p50_us'] / s['latency_p50_us']:.2f}x"
                f"  p99 {a['latency_p99_us'] / s['latency_p99_us']:.2f}x  CPU/req {a['cpu_us'] / s['cpu_us']:.2f}x")
    add(f"  upstream calls during the timed rounds: {paced['upstream_calls']} (0 = every request was a HIT)")
    add(bench.noise_line(list(servers.values())))
    add("")
    if a and "nginx_tuned" in servers:
        n = servers["nginx_tuned"]
        targets.append(("hit p99 at fixed load <= nginx tuned's",
                        f"{a['latency_p99_us'] / 1000:.3f} vs {n['latency_p99_us'] / 1000:.3f} ms",
                        a["latency_p99_us"] <= n["latency_p99_us"], ""))
