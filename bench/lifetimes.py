#!/usr/bin/env python3
"""Measures SPEC section 8 end to end: a steady reader, a 30 s outage, a warm restart.

Usage: bench/lifetimes.py [steady] [outage] [restart]   (all three by default)

Builds nothing: run `cargo build --release --bins` first (honours
CARGO_TARGET_DIR). Starts the stand-in and the proxy on loopback ports
18100-18102 and prints one line of figures per scenario.
"""
import http.client, json, os, signal, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release")
WORK = tempfile.mkdtemp(prefix="ayra-lifetimes-")

def start_standin():
    p = subprocess.Popen([f"{BIN}/ayra-standin", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    return p, line.strip().split()[-1].replace("http://", "")

def control(addr, method, path, body=None):
    c = http.client.HTTPConnection(addr); c.request(method, path, body=json.dumps(body) if body is not None else None)
    r = c.getresponse(); data = r.read(); c.close(); return data

def start_proxy(upstream, port, extra, logpath):
    cfg = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    cfg.write(f'[server]\nlisten = "127.0.0.1:{port}"\n[upstream]\nbase_url = "http://{upstream}"\ntimeout = "1s"\n[log]\nlevel = "info"\n' + extra)
    cfg.close()
    p = subprocess.Popen([f"{BIN}/ayra-cache", "--config", cfg.name], stderr=open(logpath, "w"))
    for _ in range(200):
        try:
            c = http.client.HTTPConnection(f"127.0.0.1:{port}"); c.request("GET", "/healthz"); c.getresponse().read(); return p
        except OSError: time.sleep(0.02)
    raise SystemExit("proxy did not start")

def get(conn, id_):
    conn.request("GET", f"/v1/conversations/{id_}", headers={"Authorization": "Bearer sk_m"})
    r = conn.getresponse(); body = r.read()
    return r.status, r.getheader("x-cache"), body

def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1])

def steady(upstream):
    # max_ttl 2 s, refresh_ahead 0.1: read 50/s for 7 s (3.5 lifetimes).
    p = start_proxy(upstream, 18100, '[cache]\nmax_ttl = "2s"\nrefresh_ahead = 0.1\n', os.path.join(WORK, "steady.log"))
    control(upstream, "PUT", "/_standin/conversations/conv_steady", {"recording": False})
    conn = http.client.HTTPConnection("127.0.0.1:18100")
    caches = []; t0 = time.time()
    while time.time() - t0 < 7.0:
        s, x, _ = get(conn, "conv_steady"); caches.append(x); time.sleep(0.02)
    stats = json.loads(control(upstream, "GET", "/_standin/stats"))
    calls = stats["conversation_requests"].get("conv_steady", 0)
    p.terminate(); p.wait()
    misses_after_first = sum(1 for c in caches[1:] if c != "HIT")
    print(f"steady reader: {len(caches)} reads over 7.0 s (3.5 lifetimes of 2 s): MISSes after the first = {misses_after_first}; upstream calls = {calls} ({calls/3.5:.2f} per lifetime)")

def outage(upstream):
    # 100 conversations; URLs of conv_o0..49 die 20 s after receipt (margin 5 s -> hard ~14 s),
    # the others live 1 h. max_ttl 3 s so they go stale quickly; outage from t=5 s to t=35 s.
    p = start_proxy(upstream, 18101, '[cache]\nmax_ttl = "3s"\nexpiry_margin = "5s"\nstale_if_error = "1h"\nrefresh_ahead = 0\n', os.path.join(WORK, "outage.log"))
    for i in range(50):
        control(upstream, "PUT", f"/_standin/conversations/conv_o{i}", {"recording_ttl_ms": 20000})
    conn = http.client.HTTPConnection("127.0.0.1:18101")
    for i in range(100): get(conn, f"conv_o{i}")
    errors_cached = 0; past_hard = 0; stale = 0; total = 0; errors_after_hard = 0
    t0 = time.time(); outage_on = False
    while time.time() - t0 < 40:
        el = time.time() - t0
        if 5 <= el < 35 and not outage_on:
            control(upstream, "PUT", "/_standin/outage", {"fail_status": 503}); outage_on = True
        if el >= 35 and outage_on:
            control(upstream, "DELETE", "/_standin/outage"); outage_on = False
        for i in range(0, 100, 5):
            s, x, body = get(conn, f"conv_o{i}"); total += 1; now = time.time()
            if x == "STALE": stale += 1
            if s == 200:
                exp = json.loads(body)["data"].get("recording", {}).get("expires_at")
                if exp:
                    from datetime import datetime
                    hard = datetime.fromisoformat(exp.replace("Z", "+00:00")).timestamp() - 5
                    if now >= hard: past_hard += 1
            elif i >= 50:
                errors_cached += 1
            else:
                errors_after_hard += 1
        time.sleep(0.05)
    p.terminate(); p.wait()
    print(f"outage of 30 s: {total} reads, {stale} served STALE; errors for cached conversations whose URL was still good = {errors_cached}; "
          f"responses served at or past hard = {past_hard}; 503s passed on for conversations past their URL deadline = {errors_after_hard}")

def restart(upstream):
    snap = os.path.join(WORK, "snapshot")
    if os.path.exists(snap): os.remove(snap)
    extra = f'[cache]\nmax_bytes = "1GiB"\nsnapshot_path = "{snap}"\n'
    p = start_proxy(upstream, 18102, extra, os.path.join(WORK, "restart1.log"))
    n = 50000
    def fill(lo, hi):
        c = http.client.HTTPConnection("127.0.0.1:18102")
        for i in range(lo, hi): get(c, f"conv_r{i}")
    ts = [threading.Thread(target=fill, args=(k * n // 8, (k + 1) * n // 8)) for k in range(8)]
    [t.start() for t in ts]; [t.join() for t in ts]
    before = rss_kb(p.pid)
    t = time.time(); p.send_signal(signal.SIGTERM); p.wait(); stop_s = time.time() - t
    size = os.path.getsize(snap)
    calls0 = json.loads(control(upstream, "GET", "/_standin/stats"))["requests_total"]
    t = time.time(); p = start_proxy(upstream, 18102, extra, os.path.join(WORK, "restart2.log")); start_s = time.time() - t
    after = rss_kb(p.pid)
    conn = http.client.HTTPConnection("127.0.0.1:18102")
    t0 = time.time(); hits = 0; i = 0
    while time.time() - t0 < 10 and i < n:
        s, x, _ = get(conn, f"conv_r{i}"); hits += x == "HIT"; i += 1
    calls1 = json.loads(control(upstream, "GET", "/_standin/stats"))["requests_total"]
    p.terminate(); p.wait()
    load = [l for l in open(os.path.join(WORK, "restart2.log")) if "snapshot" in l]
    print(f"restart with {n} entries: snapshot {size/1e6:.1f} MB written in {stop_s:.2f} s (SIGTERM to exit); start to listening {start_s:.2f} s; "
          f"{load[0].strip() if load else 'no load line'}; reads in the first 10 s: {i}, HITs {hits}, upstream calls {calls1 - calls0}; RSS before {before/1024:.0f} MiB, after load {after/1024:.0f} MiB")

standin, addr = start_standin()
try:
    which = sys.argv[1:] or ["steady", "outage", "restart"]
    for name in which: globals()[name](addr)
finally:
    standin.terminate()
