#!/usr/bin/env python3
"""Measures the shared Redis tier (SPEC section 10) end to end.

Usage: bench/shared.py [calls] [latency] [outage]   (all three by default)

  calls    upstream calls per key per lifetime, 1 and 3 replicas, with and
           without [shared], 1000 ids read steadily for three lifetimes
  latency  a shared hit (local miss, Redis hit) against a local hit and a
           direct upstream call, p50 and p99 over 1000 ids
  outage   3 replicas under load while Redis is killed and restarted: failed
           requests (goal 0), and whether sharing resumed by itself

Builds nothing: run `cargo build --release --bins` first (honours
CARGO_TARGET_DIR). Needs redis-server. Starts everything on loopback ports
18200-18209 and prints one line of figures per measurement.
"""
import http.client, json, os, random, statistics, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BIN = os.path.join(TARGET, "release")
WORK = tempfile.mkdtemp(prefix="ayra-shared-")
REDIS_PORT = 18209
IDS = 1000
CHILDREN = []


def spawn(args, **kw):
    p = subprocess.Popen(args, **kw)
    CHILDREN.append(p)
    return p


def start_standin():
    p = spawn([f"{BIN}/ayra-standin", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    return p, p.stdout.readline().strip().split()[-1].replace("http://", "")


def control(addr, method, path, body=None):
    c = http.client.HTTPConnection(addr)
    c.request(method, path, body=json.dumps(body) if body is not None else None)
    data = c.getresponse().read()
    c.close()
    return data


def upstream_calls(upstream):
    return json.loads(control(upstream, "GET", "/_standin/stats"))["requests_total"]


def start_redis():
    p = spawn(["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
              stdout=subprocess.DEVNULL)
    for _ in range(200):
        if subprocess.run(["redis-cli", "-p", str(REDIS_PORT), "ping"], capture_output=True, text=True).stdout.strip() == "PONG":
            return p
        time.sleep(0.02)
    raise SystemExit("redis-server did not start")


def start_proxy(upstream, port, cache, shared):
    cfg = os.path.join(WORK, f"proxy-{port}.toml")
    text = (f'[server]\nlisten = "127.0.0.1:{port}"\n[upstream]\nbase_url = "http://{upstream}"\ntimeout = "2s"\n'
            f'[log]\nlevel = "warn"\n[cache]\ncompression = []\n{cache}')
    if shared:
        text += f'[shared]\nredis_url = "redis://127.0.0.1:{REDIS_PORT}/0"\n'
    open(cfg, "w").write(text)
    p = spawn([f"{BIN}/ayra-cache", "--config", cfg], stderr=open(os.path.join(WORK, f"proxy-{port}.log"), "a"))
    for _ in range(300):
        try:
            c = http.client.HTTPConnection(f"127.0.0.1:{port}")
            c.request("GET", "/healthz")
            c.getresponse().read()
            return p
        except OSError:
            time.sleep(0.02)
    raise SystemExit("proxy did not start")


def stop(processes):
    for p in processes:
        p.terminate()
    for p in processes:
        p.wait()


def get(conn, id_):
    conn.request("GET", f"/v1/conversations/{id_}", headers={"Authorization": "Bearer sk_bench"})
    r = conn.getresponse()
    r.read()
    return r.status, r.getheader("x-cache"), r.getheader("cache-status") or ""


def calls(upstream):
    max_ttl, lifetimes = 4.0, 3
    for replicas, shared in ((1, False), (3, False), (1, True), (3, True)):
        if shared:
            redis = start_redis()
        control(upstream, "POST", "/_standin/reset")
        ports = [18200 + i for i in range(replicas)]
        proxies = [start_proxy(upstream, port, f'max_ttl = "{max_ttl:.0f}s"\n', shared) for port in ports]
        before = upstream_calls(upstream)
        stop_at = time.time() + max_ttl * lifetimes
        reads = [0]

        def reader(k):
            conn = http.client.HTTPConnection(f"127.0.0.1:{ports[k % len(ports)]}")
            ids = list(range(IDS))
            random.Random(k).shuffle(ids)
            n = 0
            while time.time() < stop_at:
                get(conn, f"conv_bench_{ids[n % IDS]:04d}")
                n += 1
            reads[0] += n

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(6)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        made = upstream_calls(upstream) - before
        stop(proxies)
        if shared:
            stop([redis])
        # refresh_ahead 0.1: a key read steadily is fetched at 0, 3.6, 7.2 and
        # 10.8 s, so one proxy alone makes 4 calls per key in the window.
        cycles = max_ttl * lifetimes / (max_ttl * 0.9)
        print(f"calls: {replicas} replica(s), shared={'on' if shared else 'off'}: {reads[0]} reads of {IDS} ids over "
              f"{lifetimes} lifetimes of {max_ttl:.0f} s: {made} upstream calls = {made / IDS:.2f} per key "
              f"= {made / IDS / cycles:.2f} per key per lifetime (refresh cycle of {max_ttl * 0.9:.1f} s)")


def percentiles(samples):
    samples = sorted(samples)
    return statistics.median(samples) * 1000, samples[int(len(samples) * 0.99) - 1] * 1000


def timed_pass(port, ids, prefix):
    conn = http.client.HTTPConnection(f"127.0.0.1:{port}")
    samples, caches = [], []
    for i in ids:
        t = time.perf_counter()
        _, x, cs = get(conn, f"{prefix}{i:04d}")
        samples.append(time.perf_counter() - t)
        caches.append("shared" if "detail=shared" in cs else x)
    return samples, caches


def latency(upstream):
    redis = start_redis()
    a = start_proxy(upstream, 18200, "", True)
    b = start_proxy(upstream, 18201, "", True)
    ids = range(IDS)
    timed_pass(18200, ids, "conv_lat_")  # A fills Redis
    time.sleep(0.5)
    shared, kinds = timed_pass(18201, ids, "conv_lat_")
    local, local_kinds = timed_pass(18201, ids, "conv_lat_")
    direct, _ = timed_pass(upstream.split(":")[1], ids, "conv_direct_")
    stop([a, b, redis])
    for name, samples, note in (("shared hit", shared, f"{kinds.count('shared')} of {IDS} were shared hits"),
                                ("local hit", local, f"{local_kinds.count('HIT')} of {IDS} were HITs"),
                                ("direct upstream call", direct, "the stand-in itself")):
        p50, p99 = percentiles(samples)
        print(f"latency: {name}: p50 {p50:.3f} ms, p99 {p99:.3f} ms ({note}; one keep-alive client, sequential)")


def outage(upstream):
    redis = start_redis()
    ports = [18200, 18201, 18202]
    proxies = [start_proxy(upstream, port, 'max_ttl = "2s"\n', True) for port in ports]
    t0 = time.time()
    duration = 20.0
    counts = {"ok": 0, "failed": 0, "shared_after_restart": 0}
    lock = threading.Lock()

    def reader(k):
        conn = http.client.HTTPConnection(f"127.0.0.1:{ports[k % 3]}")
        rng = random.Random(k)
        while time.time() - t0 < duration:
            try:
                status, _, cs = get(conn, f"conv_out_{rng.randrange(IDS):04d}")
                ok = status == 200
            except (OSError, http.client.HTTPException):
                ok, cs = False, ""
                conn = http.client.HTTPConnection(f"127.0.0.1:{ports[k % 3]}")
            with lock:
                counts["ok" if ok else "failed"] += 1
                if ok and time.time() - t0 > 12 and "detail=shared" in cs:
                    counts["shared_after_restart"] += 1

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(6)]
    [t.start() for t in threads]
    time.sleep(5)
    redis.kill()
    redis.wait()
    time.sleep(5)
    redis = start_redis()
    [t.join() for t in threads]
    stop(proxies + [redis])
    print(f"outage: 3 replicas, {counts['ok'] + counts['failed']} requests over {duration:.0f} s, Redis killed at 5 s and "
          f"restarted at 10 s: {counts['failed']} failed; shared hits after 12 s: {counts['shared_after_restart']}")


standin, addr = start_standin()
try:
    for name in sys.argv[1:] or ["calls", "latency", "outage"]:
        globals()[name](addr)
finally:
    for child in CHILDREN:
        if child.poll() is None:
            child.kill()
