"""The client side of HTTP in bench/run: HIT throughput over HTTP/2, and bytes per HIT per content coding.

Imported by bench/run, whose helpers (processes, load, CPU accounting) each
function receives as `bench` (the run module), so this file holds only what
is particular to these phases.
"""

import os
import re
import statistics
import subprocess
import sys

BROTLI_MODULE = "/usr/lib/nginx/modules/ngx_http_brotli_filter_module.so"
CODINGS = ("identity", "gzip", "br")


# ---------------------------------------------------------------- nginx pieces

def nginx_version(binary):
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", done.stderr)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


def nginx_h2_listen(binary, port, reuseport=False):
    """An HTTP/2 cleartext (prior knowledge) listener in the installed nginx's syntax:
    `listen ... http2` before 1.25.1, `http2 on;` (in its own server) since;
    with `reuseport` for the tuned nginx."""
    options = "backlog=4096" + (" reuseport" if reuseport else "")
    if nginx_version(binary) >= (1, 25, 1):
        return f"listen 127.0.0.1:{port} {options};\n        http2 on;"
    return f"listen 127.0.0.1:{port} http2 {options};"


def nginx_compression(bench):
    """gzip (level 6, like ayra-cache) on proxied JSON, and brotli (level 5) when
    Debian's module can be had. Returns the config pieces and whether br is on."""
    if not os.path.exists(BROTLI_MODULE):
        bench.log("nginx brotli module missing: trying Debian's libnginx-mod-http-brotli-filter")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(bench.sudo_prefix() + ["apt-get", "install", "-y", "-qq", "libnginx-mod-http-brotli-filter"],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    directives = ("gzip on; gzip_proxied any; gzip_types application/json; gzip_comp_level 6; "
                  "gzip_min_length 1024; gzip_vary on;")
    modules = ""
    brotli = os.path.exists(BROTLI_MODULE)
    if brotli:
        modules = f"load_module {BROTLI_MODULE};"
        directives += " brotli on; brotli_types application/json; brotli_comp_level 5; brotli_min_length 1024;"
    return {"modules": modules, "directives": directives}, brotli


# ---------------------------------------------------------------- HTTP/2 HITs (h2load)

def run_h2load(bench, port, pids, duration, accept_encoding=""):
    """h2load, prior knowledge over cleartext, H2_CONNECTIONS x H2_STREAMS streams, the 1000 ids in turn."""
    bench.wait_quiet()
    uri_file = os.path.join(bench.tempfile.gettempdir(), f"ayra-bench-h2-{os.getpid()}-{port}.txt")
    with open(uri_file, "w") as f:
        for i in range(bench.IDS):
            f.write(f"http://127.0.0.1:{port}/v1/conversations/conv_bench_{i:04d}\n")
    args = ["h2load", "-t", str(min(bench.THREADS, bench.H2_CONNECTIONS)), "-c", str(bench.H2_CONNECTIONS),
            "-m", str(bench.H2_STREAMS), "-D", str(duration), "--warm-up-time=1", "-i", uri_file,
            "-H", f"authorization: Bearer {bench.TOKEN}"]
    if accept_encoding:
        args += ["-H", f"accept-encoding: {accept_encoding}"]
    user_before, sys_before = bench.cpu_split(pids)
    busy_before, ours_before = bench.system_busy_seconds(), bench.our_cpu_seconds()
    started = bench.time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True)
    wall = bench.time.monotonic() - started
    os.unlink(uri_file)
    user_after, sys_after = bench.cpu_split(pids)
    foreign = (bench.system_busy_seconds() - busy_before) - (bench.our_cpu_seconds() - ours_before)
    out = done.stdout
    rps = re.search(r"finished in [\d.]+s, ([\d.]+) req/s", out)
    counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                       r"(\d+) errored, (\d+) timeout", out)
    traffic = re.search(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers .*?\((\d+)\) data", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
    if done.returncode != 0 or not (rps and counts and traffic):
        sys.exit(f"bench: h2load failed ({done.returncode}):\n{out}\n{done.stderr}")
    succeeded = int(counts.group(3))
    cpu = (user_after - user_before) + (sys_after - sys_before)
    return {
        "rps": float(rps.group(1)),
        "succeeded": succeeded,
        "errors": int(counts.group(4)) + int(counts.group(5)) + int(counts.group(6)),
        "resp_bytes": int(traffic.group(1)) / max(succeeded, 1),
        "mean_ms": to_ms(mean.group(1)) if mean else float("nan"),
        "cpu_pct": 100.0 * cpu / wall,
        "foreign_pct": max(0.0, 100.0 * foreign / wall),
        "non_2xx": sum(int(x) for x in re.search(r"status codes: \d+ 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx",
                                                   out).groups()),
    }


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


def phase_h2(bench, standin, ayra, nginx, results):
    """Alternating HTTP/2 HIT rounds against ayra-cache's port and nginx's h2 listener."""
    for key, server in (("ayra", ayra), ("nginx", nginx)):
        bench.warm_up(server, key)
        bench.wait_idle(server.pids(), key)
    targets = {"ayra": (ayra.port, ayra.pids()), "nginx": (nginx.h2_port, nginx.pids())}
    for key, (port, pids) in targets.items():
        run_h2load(bench, port, pids, 2)  # untimed: connections, allocator
    standin.reset()
    runs = {"ayra": [], "nginx": []}
    for round_no in range(1, bench.ROUNDS + 1):
        for key, (port, pids) in targets.items():
            r = run_h2load(bench, port, pids, bench.DURATION)
            if r["non_2xx"]:
                sys.exit(f"bench: h2 {key}: {r['non_2xx']} answers were not 2xx")
            runs[key].append(r)
            bench.log(f"h2 round {round_no} {key:6}: {r['rps']:7.0f} req/s  mean {r['mean_ms']:.3f} ms  "
                      f"cpu {r['cpu_pct']:.0f}%  errors {r['errors']}  other processes {r['foreign_pct']:.0f}%")
    results["h2"] = {key: summarise(value) for key, value in runs.items()}
    results["h2"]["upstream_calls"] = standin.stats()["requests_total"]
    results["h2"]["pair_ratios"] = [a["rps"] / n["rps"] for a, n in zip(runs["ayra"], runs["nginx"])]


def summarise(runs):
    median = statistics.median
    return {key: median([r[key] for r in runs]) for key in ("rps", "mean_ms", "cpu_pct", "resp_bytes")} | {
        "errors": sum(r["errors"] for r in runs),
        "foreign_max": max(r["foreign_pct"] for r in runs),
        "runs": runs,
    }


# ---------------------------------------------------------------- bytes per HIT per coding (wrk)

def probe(bench, port, accept_encoding):
    """One HIT's content-encoding and body length for this Accept-Encoding."""
    headers = {"authorization": f"Bearer {bench.TOKEN}"}
    if accept_encoding:
        headers["accept-encoding"] = accept_encoding
    status, got, body = bench.http_request(port, "GET", "/v1/conversations/conv_bench_0000", headers=headers)
    return got.get("content-encoding", "identity"), len(body), bench.cache_verdict(got)


def warm_codings(bench, ayra):
    """ayra-cache compresses an entry when a HIT that accepts a coding finds it
    uncompressed and a compression slot (one per core) is free: passes over the
    ids until every answer comes compressed, then a check per coding."""
    paths = [f"/v1/conversations/conv_bench_{i:04d}" for i in range(bench.IDS)]
    for attempt in range(1, 101):
        answers = bench.run_paths(ayra.port, paths, headers=[("Accept-Encoding", "br, gzip")])
        if all(headers.get("content-encoding") == "br" for _, _, headers, _ in answers):
            bench.log(f"encodings: every entry compressed after {attempt} pass(es)")
            break
        bench.time.sleep(0.1)
    bench.wait_idle(ayra.pids(), "ayra (compressing)")
    for coding in ("gzip", "br"):
        answers = bench.run_paths(ayra.port, paths, headers=[("Accept-Encoding", coding)])
        got = sum(1 for _, _, headers, _ in answers if headers.get("content-encoding") == coding)
        if got != bench.IDS:
            sys.exit(f"bench: encodings: only {got} of {bench.IDS} HITs came {coding}-encoded")


def phase_encodings(bench, workdir, standin, ayra, results):
    """For identity, gzip and br: wrk HIT rounds against ayra-cache (precompressed
    bodies) and an nginx compressing on the fly, alternating; bytes per response."""
    compression, brotli = nginx_compression(bench)
    nginx = bench.Nginx(bench.find_binary("nginx"), workdir, "nginx-gzip", standin.port, compression=compression,
                        tuning=bench.NGINX_TUNING, reuseport=bench.NGINX_REUSEPORT)
    try:
        for key, server in (("ayra", ayra), ("nginx", nginx)):
            bench.warm_up(server, key)
        warm_codings(bench, ayra)
        standin.reset()
        out = {"brotli": brotli, "rows": {}}
        servers = (("ayra", ayra), ("nginx", nginx))
        for coding in CODINGS:
            accept = "" if coding == "identity" else coding
            runs = {key: [] for key, _ in servers}
            for _ in range(bench.ENC_ROUNDS):
                for key, server in servers:
                    r = bench.run_wrk(server.port, "hits", bench.ENC_DURATION, bench.CONNECTIONS, bench.THREADS,
                                      pids=server.pids(), quiet=True, accept_encoding=accept)
                    runs[key].append(r)
            for key, server in servers:
                sent, body, verdict = probe(bench, server.port, accept)
                s = bench.summarise(runs[key])
                out["rows"][(coding, key)] = dict(s, sent=sent, body=body, verdict=verdict)
                bench.log(f"encodings {coding:8} {key:5}: {s['rps']:7.0f} req/s  {s['resp_bytes']:.0f} B/resp "
                          f"(body {body} B, {sent})  other processes {s['foreign_max']:.0f}%")
        out["upstream_calls"] = standin.stats()["requests_total"]
        results["encodings"] = out
    finally:
        nginx.stop()


# ---------------------------------------------------------------- report

def report(bench, results, add, targets):
    h2 = results.get("h2")
    if h2:
        a, n = h2["ayra"], h2["nginx"]
        add(f"HTTP/2 HITS  prior knowledge over cleartext, h2load -c{bench.H2_CONNECTIONS} -m{bench.H2_STREAMS} "
            f"({bench.H2_CONNECTIONS * bench.H2_STREAMS} concurrent streams), {bench.IDS} ids in turn, "
            f"{bench.ROUNDS} alternating rounds x {bench.DURATION} s; medians")
        add(f"  {'':38}{'req/s':>8}{'mean ms':>9}{'CPU %':>7}{'B/resp':>8}{'errors':>7}")
        for label, s in (("ayra-cache (h2c)", a), ("nginx tuned (listen http2)", n)):
            add(f"  {label:38}{s['rps']:8.0f}{s['mean_ms']:9.3f}{s['cpu_pct']:7.0f}{s['resp_bytes']:8.0f}"
                f"{s['errors']:7d}")
        ratio = a["rps"] / n["rps"]
        add(f"  {'ratio ayra/nginx':38}{ratio:7.2f}x{a['mean_ms'] / n['mean_ms']:8.2f}x")
        for line in bench.rounds_lines(a, n, h2["pair_ratios"], p99=False):
            add(line)
        add(f"  upstream calls during the timed rounds: {h2['upstream_calls']} (0 = every request was a HIT)")
        add(bench.noise_line([a, n]))
        add("")
    enc = results.get("encodings")
    if enc:
        add(f"CONTENT CODINGS  HITs with Accept-Encoding per row, wrk -t{bench.THREADS} -c{bench.CONNECTIONS}, "
            f"{bench.ENC_ROUNDS} alternating round(s) x {bench.ENC_DURATION} s; medians")
        add("  ayra-cache serves bodies compressed once per entry; nginx (gzip 6"
            + (", brotli 5" if enc["brotli"] else "; no brotli module") + ") compresses every response")
        add(f"  {'':32}{'sent':>9}{'body B':>8}{'B/resp':>8}{'req/s':>8}{'CPU %':>7}{'errors':>7}")
        for coding in CODINGS:
            for key, label in (("ayra", "ayra-cache"), ("nginx", "nginx")):
                s = enc["rows"][(coding, key)]
                add(f"  {label + ', ' + ('no Accept-Encoding' if coding == 'identity' else coding):32}"
                    f"{s['sent']:>9}{s['body']:8d}{s['resp_bytes']:8.0f}{s['rps']:8.0f}{s['cpu_pct']:7.0f}"
                    f"{s['errors']:7d}")
            a, n = enc["rows"][(coding, "ayra")], enc["rows"][(coding, "nginx")]
            add(f"  {'  ratio ayra/nginx':32}{'':9}{a['body'] / max(n['body'], 1):7.2f}x"
                f"{a['resp_bytes'] / n['resp_bytes']:7.2f}x{a['rps'] / n['rps']:7.2f}x")
        add(f"  upstream calls during the timed rounds: {enc['upstream_calls']} (0 = every request was a HIT)")
        add(bench.noise_line([enc["rows"][k] for k in enc["rows"]]))
        add("")
