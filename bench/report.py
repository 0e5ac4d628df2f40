"""bench/run's report: the HITS table, each other phase's (from its module), the targets, and the tuned nginx's config."""

import client_side
import memory
import miss
import one_core
import paced
from settings import *  # noqa: F401,F403

HIT_ROWS = (  # key, label
    ("ayra", "ayra-cache (log.level=warn)"),
    ("nginx_tuned", "nginx tuned (access_log off)"),
    ("ceiling", "ceiling: plain hyper, runtime per CPU"),
    ("nginx", "nginx untuned (access_log off)"),
    ("ayra_info", "ayra-cache (info, JSON > /dev/null) *"),
    ("nginx_tuned_log", "nginx tuned (access_log buffered) *"),
)


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


def verdict(ok):
    """MET / NOT MET; None: a figure shown beside the targets, with no threshold of its own."""
    if ok is None:
        return "(info)"
    return "MET" if ok else "NOT MET"


def hits_rows(hits, add):
    add(f"  {'':40}{'req/s':>8}{'p50 ms':>8}{'p99 ms':>8}{'CPU %':>7}{'user':>7}{'sys':>7}{'CPU':>7}{'B/resp':>7}"
        f"{'errors':>7}")
    add(f"  {'':40}{'':>8}{'':>8}{'':>8}{'':>7}{'us/req':>7}{'us/req':>7}{'us/req':>7}")
    for key, label in HIT_ROWS:
        if key in hits:
            s = hits[key]
            add(f"  {label:40}{s['rps']:8.0f}{s['p50_ms']:8.3f}{s['p99_ms']:8.3f}{s['cpu_pct']:7.0f}"
                f"{s['user_us']:7.1f}{s['sys_us']:7.1f}{s['user_us'] + s['sys_us']:7.1f}{s['resp_bytes']:7.0f}"
                f"{s['errors']:7d}")


def hits_ratios(hits, add):
    a = hits["ayra"]
    for key, label in (("nginx_tuned", "nginx tuned"), ("nginx", "nginx untuned"), ("ceiling", "ceiling")):
        if key in hits:
            o = hits[key]
            cpu = (a["user_us"] + a["sys_us"]) / (o["user_us"] + o["sys_us"])
            add(f"  {'ratio ayra / ' + label:40}{a['rps'] / o['rps']:7.2f}x{a['p50_ms'] / o['p50_ms']:7.2f}x"
                f"{a['p99_ms'] / o['p99_ms']:7.2f}x{a['cpu_pct'] / o['cpu_pct']:6.2f}x"
                f"{a['user_us'] / o['user_us']:6.2f}x{a['sys_us'] / o['sys_us']:6.2f}x{cpu:6.2f}x")
    if "ayra_info" in hits and "nginx_tuned_log" in hits:
        i, l = hits["ayra_info"], hits["nginx_tuned_log"]
        add(f"  {'ratio ayra / nginx tuned, both logging *':40}{i['rps'] / l['rps']:7.2f}x"
            f"{i['p50_ms'] / l['p50_ms']:7.2f}x{i['p99_ms'] / l['p99_ms']:7.2f}x")
        add(f"  * {LOG_ROUNDS} round(s), each run right after that round's other servers; ayra-cache at log.level=info "
            f"with its JSON on /dev/null, nginx with `access_log {NGINX_BUFFERED_LOG};`; "
            f"ayra info/warn {i['rps'] / a['runs'][0]['rps']:.2f}x req/s (same round)")


def hits_rounds(hits, add):
    for key, label in (("nginx_tuned", "nginx tuned"), ("ceiling", "ceiling"), ("nginx", "nginx untuned")):
        if key in hits:
            add(f"  rounds req/s {label:13}: " + ", ".join(f"{r['rps']:.0f}" for r in hits[key]["runs"])
                + " | ayra / it per round " + ", ".join(f"{x:.2f}" for x in hits["pair_ratios"][key]))
    add(f"  rounds req/s {'ayra-cache':13}: " + ", ".join(f"{r['rps']:.0f}" for r in hits["ayra"]["runs"]))
    cpu = {key: [r["user_us"] + r["sys_us"] for r in hits[key]["runs"]]
           for key in ("ayra", "nginx_tuned", "ceiling") if key in hits}
    if "ceiling" in cpu:
        add("  rounds CPU us/HIT: " + " | ".join(f"{key} " + ", ".join(f"{x:.1f}" for x in xs) for key, xs in cpu.items())
            + " | ayra / ceiling per round " + ", ".join(f"{a / c:.2f}" for a, c in zip(cpu["ayra"], cpu["ceiling"])))
    add("  rounds p99 ms: " + " | ".join(
        f"{label} " + ", ".join(f"{r['p99_us'] / 1000:.2f}" for r in hits[key]["runs"])
        for key, label in (("ayra", "ayra"), ("nginx_tuned", "nginx tuned"), ("ceiling", "ceiling")) if key in hits))


def report_hits(hits, add, targets):
    add(f"HITS  warm caches, {IDS} ids round-robin, wrk -t{THREADS} -c{CONNECTIONS}, "
        f"{ROUNDS} alternating rounds x {DURATION} s; medians")
    add(f"  nginx tuned = bench/nginx.conf.in + `{NGINX_TUNING}` (its whole config is at the end); "
        f"ceiling = bench/tools ayra-ceiling")
    hits_rows(hits, add)
    hits_ratios(hits, add)
    hits_rounds(hits, add)
    add(f"  upstream calls during the timed rounds: {hits['upstream_calls']} (0 = every request was a HIT)")
    add(noise_line([hits[key] for key, _ in HIT_ROWS if key in hits]))
    add("")
    a = hits["ayra"]
    cpu = a["user_us"] + a["sys_us"]
    if "nginx_tuned" in hits:
        n = hits["nginx_tuned"]
        ratio = a["rps"] / n["rps"]
        targets.append(("hit throughput >= 1.3x nginx tuned", f"{ratio:.2f}x", ratio >= 1.3,
                        f"needs {1.3 / ratio:.2f}x more" if ratio < 1.3 else ""))
        n_cpu = n["user_us"] + n["sys_us"]
        targets.append(("CPU per HIT <= 0.77x nginx tuned's", f"{cpu:.1f} vs {n_cpu:.1f} us ({cpu / n_cpu:.2f}x)",
                        cpu <= 0.77 * n_cpu, f"needs {cpu / (0.77 * n_cpu):.2f}x less" if cpu > 0.77 * n_cpu else ""))
        targets.append(("hit p99 <= nginx tuned's (saturated)", f"{a['p99_ms']:.3f} vs {n['p99_ms']:.3f} ms",
                        a["p99_ms"] <= n["p99_ms"], ""))
    if "ceiling" in hits:
        c = hits["ceiling"]
        c_cpu = c["user_us"] + c["sys_us"]
        targets.append(("CPU per HIT <= 1.25x the ceiling's", f"{cpu:.1f} vs {c_cpu:.1f} us ({cpu / c_cpu:.2f}x)",
                        cpu <= 1.25 * c_cpu, f"needs {cpu / (1.25 * c_cpu):.2f}x less" if cpu > 1.25 * c_cpu else ""))
    if "ayra_info" in hits and "nginx_tuned_log" in hits:
        i, l = hits["ayra_info"], hits["nginx_tuned_log"]
        i_cpu, l_cpu = i["user_us"] + i["sys_us"], l["user_us"] + l["sys_us"]
        targets.append(("CPU per HIT logging <= nginx tuned's logging", f"{i_cpu:.1f} vs {l_cpu:.1f} us",
                        i_cpu <= l_cpu, ""))
    if "nginx" in hits:
        ratio = a["rps"] / hits["nginx"]["rps"]
        targets.append(("hit throughput against nginx untuned", f"{ratio:.2f}x", None, ""))


def report(info, results, bench):
    """The table; `bench` is the run module (the phase modules report through it)."""
    lines = []
    add = lines.append
    mode = "quick" if QUICK else "full"
    if PHASES != ALL_PHASES:
        mode += f", phases {','.join(PHASES)}"
    add(f"ayra-cache vs nginx proxy_cache and a plain-hyper ceiling ({mode} run, {info['date']})")
    add(f"machine: {info['cpus']} CPUs ({info['model']}), Linux {info['kernel']}, {info['memory']} RAM")
    add(f"software: ayra-cache {info['commit']}; {info['nginx']}; {info['wrk']}; {info['rustc']}")
    add("client, proxies and stand-in share the same CPUs (but in ONE CORE EACH); ayra-cache runs "
        f"{CPUS} worker threads, nginx {WORKERS} workers, the ceiling {CPUS} runtimes")
    add("")
    targets = []
    if results.get("hits") and "ayra" in results["hits"]:
        report_hits(results["hits"], add, targets)
    paced.report(bench, results, add, targets)
    one_core.report(bench, results, add, targets)
    client_side.report(bench, results, add, targets)
    miss.report(bench, results, add, targets)
    stampede_report(results, add, targets)
    memory.report(bench, results, add, targets)
    if targets:
        add("TARGETS")
        width = max(len(t[0]) for t in targets) + 2
        for name, value, ok, gap in targets:
            add(f"  {name:{width}}{value:28} {verdict(ok):8} {gap}")
    if results.get("nginx_tuned_config"):
        add("")
        add("NGINX TUNED  the exact config of the tuned nginx (<tmp>: the run's temp dir; loopback ports as run)")
        lines.extend("  " + line if line else "" for line in results["nginx_tuned_config"].splitlines())
    return "\n".join(lines) + "\n"


def stampede_report(results, add, targets):
    stampede = results.get("stampede")
    if not stampede:
        return
    add(f"(b) STAMPEDE  {STAMPEDE} concurrent requests for one cold id, upstream delay {STAMPEDE_DELAY_MS} ms")
    add(f"  {'':14}{'upstream calls':>15}{'p50 ms':>9}{'max ms':>9}  answers")
    for key, label in (("ayra", "ayra-cache"), ("nginx", "nginx tuned")):
        if key in stampede:
            s = stampede[key]
            answers = ", ".join(f"{v} {k}" for k, v in sorted(s["verdicts"].items(), key=lambda kv: -kv[1]))
            add(f"  {label:14}{s['calls']:15d}{s['p50_ms']:9.1f}{s['max_ms']:9.1f}  {answers}")
    add("")
    if "ayra" in stampede:
        calls = stampede["ayra"]["calls"]
        targets.append((f"stampede of {STAMPEDE} = 1 upstream call", f"{calls} call(s)", calls == 1, ""))
