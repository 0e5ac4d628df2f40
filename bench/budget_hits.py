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
compare the columns, not the absolute figures. The missers run in a child
process, so their threads never hold the hitters' interpreter lock; they
still share the CPUs with the proxy and the hitters, as real traffic would.
Prints the machine, the load average at the start and end and the CPU other
processes used, and writes the output to bench/results/<UTC date>-budget-hits.txt.

Variables: BUDGET_ROUNDS (3), BUDGET_SECONDS per round (5), BUDGET_HITTERS
(8 threads, one keep-alive connection each), BUDGET_MISSERS (32), BUDGET_IDS (200).
"""
import http.client, itertools, multiprocessing, os, signal, subprocess, sys, tempfile, threading, time

import host

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


def hitter(n, stop, latencies, wrong):
    conn = http.client.HTTPConnection(f"127.0.0.1:{PORT}")
    for i in itertools.count(n):
        if stop.is_set():
            return
        t = time.perf_counter(); status, cache = get(conn, f"warm_{i % IDS}")
        latencies.append(time.perf_counter() - t)
        if (status, cache) != (200, "HIT"):
            wrong.append((status, cache))


def misser(ids, stop, counts):
    conn = http.client.HTTPConnection(f"127.0.0.1:{PORT}", timeout=10)
    while not stop.is_set():
        status, _ = get(conn, f"cold_{next(ids)}")
        counts[status] = counts.get(status, 0) + 1


def missers(first_id, stop, results):
    """In a child process: MISSERS threads of cold misses until `stop`; their counts by status go to `results`."""
    ids, counts, inner_stop = itertools.count(first_id), {}, threading.Event()
    threads = [threading.Thread(target=misser, args=(ids, inner_stop, counts)) for _ in range(MISSERS)]
    for t in threads: t.start()
    stop.wait(); inner_stop.set()
    for t in threads: t.join()
    results.put(counts)


def run_round(saturated, first_id):
    stop = threading.Event(); latencies = []; wrong = []; counts = {}
    threads = [threading.Thread(target=hitter, args=(n, stop, latencies, wrong)) for n in range(HITTERS)]
    if saturated:
        child_stop, results = multiprocessing.Event(), multiprocessing.Queue()
        child = multiprocessing.Process(target=missers, args=(first_id, child_stop, results)); child.start()
        time.sleep(1)  # the missers' calls queue up before the HITs are timed
    for t in threads: t.start()
    time.sleep(SECONDS); stop.set()
    for t in threads: t.join()
    if saturated:
        child_stop.set(); counts = results.get(); child.join()
    if wrong:
        raise SystemExit(f"{len(wrong)} HITs were not 200 HIT, e.g. {wrong[0]}")
    return latencies, counts


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def main():
    out = [f"ayra-cache budget: HIT latency with the budget idle vs saturated ({time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC)",
           host.description(),
           "The machine is shared with other engineers (other compiles may run); both modes alternate, so a disturbance",
           "hits either; compare the columns, and the CPU other processes used, not the absolute figures."]
    print("\n".join(out), flush=True)
    standin, upstream = start_standin()
    work = tempfile.mkdtemp(prefix="ayra-budget-")
    path = os.path.join(work, "ayra-cache.toml")
    open(path, "w").write(config(upstream, 0))
    proxy = start_proxy(path)
    try:
        conn = http.client.HTTPConnection(f"127.0.0.1:{PORT}")
        for i in range(IDS): get(conn, f"warm_{i}")
        open(path, "w").write(config(upstream, 20)); proxy.send_signal(signal.SIGHUP); time.sleep(0.5)
        other_cpu = host.OtherCpu([standin.pid, proxy.pid])
        results = {False: [], True: []}; misses = {}; rounds = []
        for n in range(ROUNDS):
            for saturated in (False, True):
                latencies, counts = run_round(saturated, n * 1_000_000)
                results[saturated] += latencies
                rounds.append(f"{pct(latencies, 0.5):.3f}/{pct(latencies, 0.99):.3f}")
                for k, v in counts.items(): misses[k] = misses.get(k, 0) + v
        out += [f"proxy: pass-through, one credential, [upstream.budget] rate 20, burst 5, max_wait 2s (on by SIGHUP after the warm-up)",
                f"HIT latency, {ROUNDS} alternating rounds of {SECONDS:.0f} s, {HITTERS} connections; {MISSERS} missers when saturated",
                f"{'budget':<10} {'HITs':>8} {'p50 ms':>8} {'p99 ms':>8}"]
        for saturated, label in ((False, "idle"), (True, "saturated")):
            lat = results[saturated]
            out.append(f"{label:<10} {len(lat):>8} {pct(lat, 0.5):>8.3f} {pct(lat, 0.99):>8.3f}")
        out += [f"rounds p50/p99 ms (idle, saturated, idle, ...): {', '.join(rounds)}",
                f"cold misses while saturated, by status: {dict(sorted(misses.items()))}",
                host.OtherCpu.line(other_cpu.percent()) + " (over the rounds)", host.load_average("end")]
        print("\n".join(out[4:]))
        name = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-budget-hits.txt"
        with open(os.path.join(ROOT, "bench", "results", name), "w") as f:
            f.write("\n".join(out) + "\n")
        print(f"written: bench/results/{name}")
    finally:
        proxy.terminate(); proxy.wait(); standin.terminate(); standin.wait()


if __name__ == "__main__":
    sys.exit(main())
