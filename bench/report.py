"""bench/run's report: the table of every phase that ran, and the targets."""

import client_side
import one_core
from settings import *  # noqa: F401,F403


# ---------------------------------------------------------------- report

def noise_line(summaries):
    worst = max(s["foreign_max"] for s in summaries)
    note = "  (quiet)" if worst < 10 else "  WARNING: another workload was running; numbers are noisy"
    return f"  CPU used by other processes during these runs: max {worst:.0f}% of {CPUS * 100}%{note}"


def rounds_lines(a, n, pair_ratios, p99=True):
    """Each round's req/s (and p99) for ayra-cache (`a`) and nginx (`n`), and their pairs."""
    lines = ["  rounds req/s: ayra " + ", ".join(f"{r['rps']:.0f}" for r in a["runs"])
             + " | nginx " + ", ".join(f"{r['rps']:.0f}" for r in n["runs"])
             + " | ratio per round " + ", ".join(f"{x:.2f}" for x in pair_ratios)]
    if p99:
        lower = sum(ar["p99_us"] <= nr["p99_us"] for ar, nr in zip(a["runs"], n["runs"]))
        lines.append("  rounds p99 ms: ayra " + ", ".join(f"{r['p99_us'] / 1000:.2f}" for r in a["runs"])
                     + " | nginx " + ", ".join(f"{r['p99_us'] / 1000:.2f}" for r in n["runs"])
                     + f" | ayra's no worse in {lower} of {len(a['runs'])} rounds")
    return lines


def fmt_mib(n):
    return f"{n / MIB:.1f} MiB"


def verdict(ok):
    return "MET" if ok else "NOT MET"


def report(info, results, bench):
    """The table; `bench` is the run module (the client-side phases report through it)."""
    lines = []
    add = lines.append
    mode = "quick" if QUICK else "full"
    add(f"ayra-cache vs nginx proxy_cache ({mode} run, {info['date']})")
    add(f"machine: {info['cpus']} CPUs ({info['model']}), Linux {info['kernel']}, {info['memory']} RAM")
    add(f"software: ayra-cache {info['commit']}; {info['nginx']}; {info['wrk']}; {info['rustc']}")
    add("client, proxies and stand-in share the same CPUs (but in ONE CORE EACH); ayra-cache runs "
        f"{CPUS} worker threads, nginx {WORKERS} workers")
    add("")

    targets = []
    hits = results.get("hits")
    if hits and "ayra" in hits:
        a, n = hits["ayra"], hits["nginx"]
        add(f"HITS  warm cache, {IDS} ids round-robin, wrk -t{THREADS} -c{CONNECTIONS}, "
            f"{ROUNDS} alternating rounds x {DURATION} s; medians")
        add(f"  {'':38}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'CPU %':>7}{'user':>7}{'sys':>7}{'B/resp':>7}{'errors':>7}")
        add(f"  {'':38}{'':>8}{'':>8}{'':>8}{'':>7}{'us/req':>7}{'us/req':>7}")
        rows = [("ayra-cache (log.level=warn)", a), ("nginx proxy_cache (access_log off)", n)]
        if "ayra_info" in hits:
            rows.append((f"ayra-cache (info, JSON > /dev/null) *", hits["ayra_info"]))
        if "nginx_log" in hits:
            rows.append((f"nginx (access_log /dev/null) *", hits["nginx_log"]))
        for label, s in rows:
            add(f"  {label:38}{s['rps']:8.0f}{s['p50_ms']:8.3f}{s['p99_ms']:8.3f}{s['cpu_pct']:7.0f}"
                f"{s['user_us']:7.1f}{s['sys_us']:7.1f}{s['resp_bytes']:7.0f}{s['errors']:7d}")
        ratio = a["rps"] / n["rps"]
        add(f"  {'ratio ayra/nginx (warn, log off)':38}{ratio:7.2f}x{a['p50_ms'] / n['p50_ms']:7.2f}x"
            f"{a['p99_ms'] / n['p99_ms']:7.2f}x{a['cpu_pct'] / n['cpu_pct']:6.2f}x"
            f"{a['user_us'] / n['user_us']:6.2f}x{a['sys_us'] / n['sys_us']:6.2f}x")
        if "ayra_info" in hits and "nginx_log" in hits:
            i, l = hits["ayra_info"], hits["nginx_log"]
            add(f"  {'ratio ayra/nginx (both logging) *':38}{i['rps'] / l['rps']:7.2f}x{i['p50_ms'] / l['p50_ms']:7.2f}x"
                f"{i['p99_ms'] / l['p99_ms']:7.2f}x")
            add(f"  * {LOG_ROUNDS} round(s), each run right after that round's plain pair; "
                f"ayra info/warn {i['rps'] / a['runs'][0]['rps']:.2f}x req/s, "
                f"ayra info / nginx log off {i['rps'] / n['runs'][0]['rps']:.2f}x (same round)")
        lines.extend(rounds_lines(a, n, hits["pair_ratios"]))
        add(f"  upstream calls during the timed rounds: {hits['upstream_calls']} (0 = every request was a HIT)")
        add(noise_line([s for _, s in rows]))
        add("")
        targets.append(("hit throughput >= 1.3x nginx", f"{ratio:.2f}x", ratio >= 1.3,
                        f"needs {1.3 / ratio:.2f}x more" if ratio < 1.3 else ""))
        p99_ratio = a["p99_ms"] / n["p99_ms"]
        targets.append(("hit p99 <= nginx p99", f"{a['p99_ms']:.3f} vs {n['p99_ms']:.3f} ms", p99_ratio <= 1.0,
                        f"{p99_ratio:.2f}x nginx's" if p99_ratio > 1.0 else ""))

    one_core.report(bench, results, add, targets)
    client_side.report(bench, results, add, targets)

    miss = results.get("miss")
    if miss:
        d, a, p = miss["direct"], miss["ayra"], miss["ayra_plain"]
        pacing = f", {MISS_PACE_MS} ms pause before each request" if MISS_PACE_MS else ", closed loop"
        add(f"(a) MISS LATENCY  a never-seen id per request, wrk -c{MISS_CONNECTIONS}{pacing}, "
            f"{MISS_ROUNDS} round(s) x {MISS_DURATION} s each; medians")
        add(f"  {'':34}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>10}")
        add(f"  {'direct to the stand-in':34}{d['p50_ms']:9.3f}{d['p99_ms']:9.3f}{d['rps']:10.0f}")
        add(f"  {'through ayra-cache, compression on':34}{a['p50_ms']:9.3f}{a['p99_ms']:9.3f}{a['rps']:10.0f}")
        add(f"  {'through ayra-cache, compression off':34}{p['p50_ms']:9.3f}{p['p99_ms']:9.3f}{p['rps']:10.0f}")
        added_p50 = a["p50_ms"] - d["p50_ms"]
        added_p99 = a["p99_ms"] - d["p99_ms"]
        add(f"  {'added, compression on (default)':34}{added_p50:+9.3f}{added_p99:+9.3f}")
        add(f"  {'added, compression off':34}{p['p50_ms'] - d['p50_ms']:+9.3f}{p['p99_ms'] - d['p99_ms']:+9.3f}")
        add(f"  upstream calls through ayra-cache: {miss['ayra_upstream_calls']} for {miss['ayra_requests']} "
            "completed requests (wrk does not count the ones in flight at its end)")
        add(noise_line([d, a, p]))
        add("")
        targets.append(("miss adds <= 0.2 ms at p50 (compression on)", f"{added_p50:+.3f} ms", added_p50 <= 0.2,
                        f"{added_p50 - 0.2:.3f} ms over" if added_p50 > 0.2 else ""))

    stampede = results.get("stampede")
    if stampede:
        add(f"(b) STAMPEDE  {STAMPEDE} concurrent requests for one cold id, upstream delay {STAMPEDE_DELAY_MS} ms")
        add(f"  {'':14}{'upstream calls':>15}{'p50 ms':>9}{'max ms':>9}  answers")
        for key, label in (("ayra", "ayra-cache"), ("nginx", "nginx")):
            if key in stampede:
                s = stampede[key]
                answers = ", ".join(f"{v} {k}" for k, v in sorted(s["verdicts"].items(), key=lambda kv: -kv[1]))
                add(f"  {label:14}{s['calls']:15d}{s['p50_ms']:9.1f}{s['max_ms']:9.1f}  {answers}")
        add("")
        if "ayra" in stampede:
            calls = stampede["ayra"]["calls"]
            targets.append((f"stampede of {STAMPEDE} = 1 upstream call", f"{calls} call(s)", calls == 1, ""))

    memory = results.get("memory")
    if memory:
        b, rss = memory["bytes"], memory["rss"]
        stats = memory["stats"]
        add(f"(c) MEMORY  {memory['stored']} distinct entries stored (cache.max_bytes {fmt_mib(MEM_MAX_BYTES)})")
        add(f"  bytes cached (bodies served) {fmt_mib(b)}; cache's own weight {fmt_mib(stats.get('bytes', 0))} "
            f"in {stats.get('entries', '?')} entries")
        add(f"  RSS idle {fmt_mib(memory['rss_idle'])}; RSS after {fmt_mib(rss)} (peak {fmt_mib(memory['rss_peak'])})")
        add(f"  RSS / bytes = {rss / b:.2f}; RSS - bytes = {fmt_mib(rss - b)}; "
            f"per entry {(rss - memory['rss_idle']) / max(memory['stored'], 1):.0f} B of RSS for "
            f"{b / max(memory['stored'], 1):.0f} B of body")
        if memory["other"]:
            add(f"  answers not stored: {memory['other']}")
        add("")
        limit = 1.2 * b + 30e6
        targets.append(("RSS <= 1.2 x bytes + 30 MB", f"{fmt_mib(rss)} vs {fmt_mib(limit)}", rss <= limit,
                        f"{fmt_mib(rss - limit)} over" if rss > limit else ""))

    bound = results.get("bound")
    if bound:
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
        targets.append((f"bound holds at {BOUND_FACTOR}x offered (RSS <= 1.2 x max_bytes + 30 MB)",
                        f"{fmt_mib(rss)} vs {fmt_mib(limit)}", rss <= limit and weight_ok,
                        ("" if rss <= limit else f"{fmt_mib(rss - limit)} over")
                        + ("" if weight_ok else " weight over max_bytes")))

    if targets:
        add("TARGETS")
        width = max(len(t[0]) for t in targets) + 2
        for name, value, ok, gap in targets:
            add(f"  {name:{width}}{value:28} {verdict(ok):8} {gap}")
    return "\n".join(lines) + "\n"
