#!/usr/bin/env python3
"""A backfill job and a dashboard sharing one API key, with and without the budget (issue 17, deliverable 7).

Usage: bench/budget.py

The stand-in models Ayra's quota for the key: a token bucket of QUOTA_RATE
calls a second, QUOTA_BURST at once, answering 429 with retry-after past it.
The proxy holds the key (upstream.api_key) and lets in two client tokens, one
for the backfill and one for the dashboard (docs/budget.md's worked example).
Each run starts a fresh stand-in and proxy; the runs alternate budget off
(rate = 0) and budget on (BUDGET_RATE, BUDGET_BURST, BUDGET_MAX_WAIT), and in
each, at the same time:
  backfill   BACKFILL_IDS cold ids over BACKFILL_CONNECTIONS keep-alive
             connections as fast as it can; a 429 or 5xx is retried after
             its retry-after (1 s without one), until every id is read;
  dashboard  one cold miss every DASHBOARD_PERIOD_MS (each on its own
             connection from a pool, so a slow one does not hold back the
             next), then DASHBOARD_HITS HITs of ids warmed before the run;
             nothing retried: an error is what its user would see.
It prints, per run, the dashboard's miss and HIT latency and errors, the
backfill's completion time and statuses, the stand-in's 429s, its calls per
1 s bucket (from GET /_standin/calls) and the proxy's budget metrics; and
writes it all, with the machine and the exact configs, to
bench/results/<UTC date>-budget.txt.

Builds with `cargo build --release --bins` (CARGO_TARGET_DIR honoured)
unless BENCH_SKIP_BUILD is set. Loopback ports 18120-18121.

Variables (defaults): BUDGET_PAIRS (1: runs off, on), BACKFILL_IDS (600),
BACKFILL_CONNECTIONS (16), DASHBOARD_PERIOD_MS (250), DASHBOARD_HITS (2),
QUOTA_RATE (20), QUOTA_BURST (10), BUDGET_RATE (18), BUDGET_BURST (5),
BUDGET_MAX_WAIT (2s).
"""
import hashlib, http.client, json, os, queue, subprocess, sys, tempfile, threading, time

import host

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release")
ENV = os.environ.get
PAIRS = int(ENV("BUDGET_PAIRS", "1"))
BACKFILL_IDS = int(ENV("BACKFILL_IDS", "600"))
BACKFILL_CONNECTIONS = int(ENV("BACKFILL_CONNECTIONS", "16"))
DASHBOARD_PERIOD = int(ENV("DASHBOARD_PERIOD_MS", "250")) / 1000
DASHBOARD_HITS = int(ENV("DASHBOARD_HITS", "2"))
QUOTA = {"rate": float(ENV("QUOTA_RATE", "20")), "burst": int(ENV("QUOTA_BURST", "10"))}
BUDGET = {"rate": ENV("BUDGET_RATE", "18"), "burst": ENV("BUDGET_BURST", "5"), "max_wait": ENV("BUDGET_MAX_WAIT", "2s")}
PORT, ADMIN_PORT = 18120, 18121
WARM_IDS = 20
TOKENS = {"backfill": "tok_backfill", "dashboard": "tok_dashboard"}


def proxy_config(upstream, budget_on):
    digests = ", ".join(f'"{hashlib.sha256(t.encode()).hexdigest()}"' for t in TOKENS.values())
    budget = (f'rate = {BUDGET["rate"]}\nburst = {BUDGET["burst"]}\nmax_wait = "{BUDGET["max_wait"]}"\n'
              if budget_on else "rate = 0\n")
    return (f'[server]\nlisten = "127.0.0.1:{PORT}"\nadmin_listen = "127.0.0.1:{ADMIN_PORT}"\n'
            f'[upstream]\nbase_url = "http://{upstream}"\napi_key = "sk_ayra_shared"\n'
            f'[upstream.budget]\n{budget}'
            f'[auth]\nclient_tokens_sha256 = [{digests}]\n'
            f'[cache]\nmax_ttl = "1h"\nrefresh_ahead = 0\n[log]\nlevel = "warn"\n')


def start(budget_on, work, children):
    standin = subprocess.Popen([f"{BIN}/ayra-standin", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    children.append(standin)
    upstream = standin.stdout.readline().strip().split()[-1].replace("http://", "")
    config = proxy_config(upstream, budget_on)
    path = os.path.join(work, "ayra-cache.toml")
    with open(path, "w") as f:
        f.write(config)
    proxy = subprocess.Popen([f"{BIN}/ayra-cache", "--config", path], stderr=open(os.path.join(work, "proxy.log"), "a"))
    children.append(proxy)
    for _ in range(300):
        try:
            request(ADMIN_PORT, "GET", "/healthz")
            return upstream, config
        except OSError:
            time.sleep(0.02)
    raise SystemExit("proxy did not start")


def request(port_or_addr, method, path, body=None):
    addr = f"127.0.0.1:{port_or_addr}" if isinstance(port_or_addr, int) else port_or_addr
    conn = http.client.HTTPConnection(addr, timeout=10)
    conn.request(method, path, body=json.dumps(body) if body is not None else None)
    data = conn.getresponse().read()
    conn.close()
    return data


def get(conn, who, id_):
    """One read: (status, seconds, retry-after, error code); status 0 when the connection failed."""
    t = time.perf_counter()
    try:
        conn.request("GET", f"/v1/conversations/{id_}", headers={"Authorization": f"Bearer {TOKENS[who]}"})
        r = conn.getresponse()
        body = r.read()
    except (OSError, http.client.HTTPException) as error:
        conn.close()  # the next request reconnects
        return 0, time.perf_counter() - t, None, type(error).__name__
    elapsed = time.perf_counter() - t
    code = ""
    if r.status >= 400:
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "unreadable"
    return r.status, elapsed, r.getheader("retry-after"), code


def backfill(ids, tally, lock):
    conn = http.client.HTTPConnection(f"127.0.0.1:{PORT}", timeout=30)
    while True:
        try:
            id_ = ids.get_nowait()
        except queue.Empty:
            return
        while True:
            status, _, retry_after, code = get(conn, "backfill", id_)
            with lock:
                key = f"{status} {code}".strip()
                tally[key] = tally.get(key, 0) + 1
            if status != 0 and status != 429 and status < 500:
                break  # read (or refused for good: counted, not retried)
            time.sleep(float(retry_after) if retry_after and retry_after.isdigit() else 1.0)


class Dashboard:
    """One cold miss per period on a pooled connection, then a few HITs; records what its user saw."""

    def __init__(self):
        self.misses, self.hits, self.lock, self.pool = [], [], threading.Lock(), queue.Queue()
        self.threads = []

    def miss(self, n):
        try:
            conn = self.pool.get_nowait()
        except queue.Empty:
            conn = http.client.HTTPConnection(f"127.0.0.1:{PORT}", timeout=30)
        status, elapsed, _, code = get(conn, "dashboard", f"dash_cold_{n}")
        self.pool.put(conn)
        with self.lock:
            self.misses.append((status, elapsed, code))

    def run(self, stop):
        conn = http.client.HTTPConnection(f"127.0.0.1:{PORT}", timeout=30)
        start, n = time.perf_counter(), 0
        while not stop.is_set():
            thread = threading.Thread(target=self.miss, args=(n,))
            thread.start()
            self.threads.append(thread)
            for k in range(DASHBOARD_HITS):
                status, elapsed, _, code = get(conn, "dashboard", f"dash_warm_{(n * DASHBOARD_HITS + k) % WARM_IDS}")
                self.hits.append((status, elapsed, code))
            n += 1
            stop.wait(max(0.0, start + n * DASHBOARD_PERIOD - time.perf_counter()))
        for thread in self.threads:
            thread.join()


def run_once(budget_on, work):
    children = []
    try:
        upstream, config = start(budget_on, work, children)
        conn = http.client.HTTPConnection(f"127.0.0.1:{PORT}", timeout=30)
        for k in range(WARM_IDS):
            assert get(conn, "dashboard", f"dash_warm_{k}")[0] == 200
        request(upstream, "POST", "/_standin/reset")
        request(upstream, "PUT", "/_standin/rate_limit", QUOTA)
        time.sleep(1.0)  # both buckets full again after the warm-up
        before = budget_metrics()
        result = measure(upstream, children)
        after = budget_metrics()
        result["config"] = config
        result["metrics"] = [f"{name} {value - before.get(name, 0):g}" if "paused" not in name else f"{name} {value:g}"
                             for name, value in after.items()]
        return result
    finally:
        for p in children:
            p.terminate()
        for p in children:
            p.wait()


def budget_metrics():
    """The proxy's budget series (histogram buckets left out), by name with labels."""
    text = request(ADMIN_PORT, "GET", "/metrics").decode()
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(("ayra_cache_budget", "ayra_cache_upstream_paused")) and "_bucket" not in line}


def measure(upstream, children):
    ids = queue.Queue()
    for k in range(BACKFILL_IDS):
        ids.put(f"backfill_{k:05d}")
    tally, lock, stop, dashboard = {}, threading.Lock(), threading.Event(), Dashboard()
    t0_ms = json.loads(request(upstream, "GET", "/_standin/calls"))["now_ms"]
    other_cpu, t0 = host.OtherCpu([p.pid for p in children]), time.perf_counter()
    board = threading.Thread(target=dashboard.run, args=(stop,))
    board.start()
    workers = [threading.Thread(target=backfill, args=(ids, tally, lock)) for _ in range(BACKFILL_CONNECTIONS)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    backfill_seconds = time.perf_counter() - t0
    stop.set()
    board.join()
    others_pct = other_cpu.percent()
    record = json.loads(request(upstream, "GET", "/_standin/calls"))
    calls = [c for key_calls in record["calls"].values() for c in key_calls]
    return {"backfill_seconds": backfill_seconds, "backfill": tally, "dashboard": dashboard,
            "calls": [((c["at_ms"] - t0_ms) / 1000, c["limited"]) for c in calls], "others_pct": others_pct}


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


def statuses(rows):
    counts = {}
    for status, _, code in rows:
        key = f"{status} {code}".strip()
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def per_second(calls):
    seconds = int(max((t for t, _ in calls), default=0)) + 1
    made, limited = [0] * seconds, [0] * seconds
    for t, refused in calls:
        made[max(0, int(t))] += 1
        limited[max(0, int(t))] += refused == 429
    return made, limited


def report(label, r):
    d = r["dashboard"]
    misses, hits = [e for s, e, _ in d.misses], [e for s, e, _ in d.hits]
    ok_misses = [e for s, e, _ in d.misses if s == 200]
    errors = sum(1 for s, _, _ in d.misses + d.hits if s >= 400 or s == 0)
    made, limited = per_second(r["calls"])
    lines = [f"{label}",
             f"  dashboard misses  {len(misses):4d}  p50 {pct(misses, 0.5):7.1f} ms  p99 {pct(misses, 0.99):7.1f} ms  "
             f"(answered 200: {len(ok_misses)}, p50 {pct(ok_misses, 0.5):.1f} ms, p99 {pct(ok_misses, 0.99):.1f} ms)",
             f"  dashboard HITs    {len(hits):4d}  p50 {pct(hits, 0.5):7.1f} ms  p99 {pct(hits, 0.99):7.1f} ms",
             f"  dashboard errors (429/5xx/failed connection): {errors} of {len(misses) + len(hits)}; misses by status: {statuses(d.misses)}",
             f"  backfill: {BACKFILL_IDS} ids in {r['backfill_seconds']:.1f} s; answers by status: {dict(sorted(r['backfill'].items()))}",
             f"  stand-in: {len(r['calls'])} calls, {sum(limited)} answered 429 (over quota)",
             "  upstream calls per 1 s bucket (from the start; 'all' / 'of which 429', the stand-in's refusals):"]
    for first in range(0, len(made), 20):
        lines += [f"    {first:3d} s  all {' '.join(f'{n:3d}' for n in made[first:first + 20])}",
                  f"           429 {' '.join(f'{n:3d}' for n in limited[first:first + 20])}"]
    lines += [f"  busiest 1 s: {max(made, default=0)} calls; mean {len(r['calls']) / max(1, len(made)):.1f}/s over {len(made)} s",
              f"  {host.OtherCpu.line(r['others_pct'])} (during the run)",
              "  proxy budget metrics over the run (the paused gauge at its end):"] + [f"    {m}" for m in r["metrics"]]
    return "\n".join(lines)


def main():
    if not ENV("BENCH_SKIP_BUILD"):
        subprocess.run(["cargo", "build", "--release", "--bins", "--quiet"], cwd=ROOT, check=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    head = [f"ayra-cache budget: a backfill and a dashboard sharing one API key ({time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC, commit {commit})",
            host.description(),
            "The machine is shared with other engineers (other compiles may run): that stretches latencies (the dashboard's",
            "miss and HIT figures carry scheduling delays on 2 CPUs); the calls per second and the 429 counts come from",
            "wall-clock token buckets (the stand-in's quota, the proxy's budget) and hold unless a process is starved.",
            f"stand-in quota (PUT /_standin/rate_limit): {json.dumps(QUOTA)} per key, 429 + retry-after (whole seconds) past it",
            f"backfill: {BACKFILL_IDS} cold ids, {BACKFILL_CONNECTIONS} keep-alive connections, a 429/5xx/failed connection retried after its retry-after (1 s without one)",
            f"dashboard: 1 cold miss every {DASHBOARD_PERIOD * 1000:.0f} ms (pooled connections), then {DASHBOARD_HITS} HITs of {WARM_IDS} warm ids; no retries",
            ""]
    print("\n".join(head), flush=True)
    out, configs = head[:], {}
    work = tempfile.mkdtemp(prefix="ayra-budget-")
    for pair in range(PAIRS):
        for budget_on in (False, True):
            label = (f"budget on (rate {BUDGET['rate']}, burst {BUDGET['burst']}, max_wait {BUDGET['max_wait']})"
                     if budget_on else "budget off (rate 0)") + (f", pair {pair + 1}" if PAIRS > 1 else "")
            result = run_once(budget_on, work)
            configs[budget_on] = result["config"]
            text = report(label, result)
            print(text + "\n", flush=True)
            out += [text, ""]
    end = host.load_average("end")
    print(end)
    out += [end, "", "proxy config, budget off:", configs[False], "proxy config, budget on:", configs[True]]
    path = os.path.join(ROOT, "bench", "results", f"{stamp}-budget.txt")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    print(f"written: bench/results/{stamp}-budget.txt")


if __name__ == "__main__":
    sys.exit(main())
