#!/usr/bin/env python3
"""HIT latency with the upstream budget idle and saturated, side by side (issue 17, deliverable 3).

Usage: bench/budget_hits.py

HITs never touch the budget (SPEC section 12), so their latency should be the
same, within noise, whether the budget is idle or a flood of cold misses keeps
it saturated. This starts the stand-in and the proxy (rate 20, burst 5,
max_wait 2s), warms BUDGET_IDS ids with the budget off, turns it on by SIGHUP,
then alternates rounds: HITs alone ("idle"), and HITs while BUDGET_MISSERS
threads send cold misses without pause ("saturated": calls queue for their
turn or are refused with 429). It prints p50 and p99 of the HITs of each mode,
and how many misses were answered and refused, so saturation is visible.

Builds nothing: run `cargo build --release --bins` first (honours
CARGO_TARGET_DIR). Python's own client adds the same overhead to both modes;
compare the columns, not the absolute figures. Run it on a quiet machine.

Variables: BUDGET_ROUNDS (3), BUDGET_SECONDS per round (5), BUDGET_HITTERS
(8 threads, one keep-alive connection each), BUDGET_MISSERS (32), BUDGET_IDS (200).
"""
import http.client, itertools, os, signal, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release")
ROUNDS = int(os.environ.get("BUDGET_ROUNDS", "3"))
SECONDS = float(os.environ.get("BUDGET_SECONDS", "5"))
HITTERS = int(os.environ.get("BUDGET_HITTERS", "8"))
MISSERS = int(os.environ.get("BUDGET_MISSERS", "32"))
IDS = int(os.environ.get("BUDGET_IDS", "200"))
PORT = 18110
AUTH = {"Authorization": "Bearer sk_budget_bench"}


def start_standin():
    p = subprocess.Popen([f"{BIN}/ayra-standin", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    return p, p.stdout.readline().strip().split()[-1].replace("http://", "")


def config(upstream, rate):
    return (f'[server]\nlisten = "127.0.0.1:{PORT}"\n[upstream]\nbase_url = "http://{upstream}"\n'
            f'[upstream.budget]\nrate = {rate}\nburst = 5\nmax_wait = "2s"\n'
            f'[cache]\nmax_ttl = "1h"\nrefresh_ahead = 0\n[log]\nlevel = "warn"\n')


def start_proxy(path):
    p = subprocess.Popen([f"{BIN}/ayra-cache", "--config", path])
    for _ in range(250):
        try:
            c = http.client.HTTPConnection(f"127.0.0.1:{PORT}"); c.request("GET", "/healthz"); c.getresponse().read()
            return p
        except OSError:
            time.sleep(0.02)
    raise SystemExit("proxy did not start")


def get(conn, id_):
    conn.request("GET", f"/v1/conversations/{id_}", headers=AUTH)
    r = conn.getresponse(); r.read()
    return r.status, r.getheader("x-cache")


def hitter(n, stop, latencies):
    conn = http.client.HTTPConnection(f"127.0.0.1:{PORT}")
    for i in itertools.count(n):
        if stop.is_set():
            return
        t = time.perf_counter(); status, cache = get(conn, f"warm_{i % IDS}")
        latencies.append(time.perf_counter() - t)
        assert status == 200 and cache == "HIT", (status, cache)


def misser(ids, stop, counts):
    conn = http.client.HTTPConnection(f"127.0.0.1:{PORT}", timeout=10)
    while not stop.is_set():
        status, _ = get(conn, f"cold_{next(ids)}")
        counts[status] = counts.get(status, 0) + 1


def run_round(saturated, ids):
    stop = threading.Event(); latencies = []; counts = {}
    threads = [threading.Thread(target=hitter, args=(n, stop, latencies)) for n in range(HITTERS)]
    if saturated:
        threads += [threading.Thread(target=misser, args=(ids, stop, counts)) for _ in range(MISSERS)]
    for t in threads: t.start()
    time.sleep(SECONDS); stop.set()
    for t in threads: t.join()
    return latencies, counts


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main():
    standin, upstream = start_standin()
    work = tempfile.mkdtemp(prefix="ayra-budget-")
    path = os.path.join(work, "ayra-cache.toml")
    open(path, "w").write(config(upstream, 0))
    proxy = start_proxy(path)
    try:
        conn = http.client.HTTPConnection(f"127.0.0.1:{PORT}")
        for i in range(IDS): get(conn, f"warm_{i}")
        open(path, "w").write(config(upstream, 20)); proxy.send_signal(signal.SIGHUP); time.sleep(0.5)
        ids = itertools.count()
        results = {False: [], True: []}; misses = {}
        for _ in range(ROUNDS):
            for saturated in (False, True):
                latencies, counts = run_round(saturated, ids)
                results[saturated] += latencies
                for k, v in counts.items(): misses[k] = misses.get(k, 0) + v
        print(f"HIT latency, {ROUNDS} alternating rounds of {SECONDS:.0f} s, {HITTERS} connections")
        print(f"{'budget':<10} {'HITs':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for saturated, label in ((False, "idle"), (True, "saturated")):
            lat = results[saturated]
            print(f"{label:<10} {len(lat):>8} {pct(lat, 0.5):>8.3f} {pct(lat, 0.99):>8.3f}")
        print(f"cold misses while saturated, by status: {dict(sorted(misses.items()))}")
    finally:
        proxy.terminate(); proxy.wait(); standin.terminate(); standin.wait()


if __name__ == "__main__":
    sys.exit(main())
