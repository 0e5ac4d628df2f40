"""bench/run's settings: paths, the environment's knobs with their full and quick defaults, and its log line."""

import os
import re
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
WRK_LUA = os.path.join(BENCH_DIR, "wrk.lua")
NGINX_TEMPLATE = os.path.join(BENCH_DIR, "nginx.conf.in")
NGINX_STATIC_TEMPLATE = os.path.join(BENCH_DIR, "nginx-static.conf.in")
NGINX_PROXY_TEMPLATE = os.path.join(BENCH_DIR, "nginx-proxy.conf.in")
TOOLS_MANIFEST = os.path.join(BENCH_DIR, "tools", "Cargo.toml")
RESULTS_DIR = os.path.join(BENCH_DIR, "results")

TOKEN = "sk_bench"
ADMIN_TOKEN = "bench-admin"
MIB = 1024 * 1024


# ---------------------------------------------------------------- settings

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")


def env_int(name, full, quick):
    value = os.environ.get(name)
    return int(value) if value else (quick if QUICK else full)


def parse_size(text):
    m = re.fullmatch(r"\s*(\d+)\s*(B|KiB|MiB|GiB)?\s*", text)
    if not m:
        sys.exit(f"bench: cannot read size {text!r} (use e.g. 64MiB)")
    unit = {"": 1, "B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB}[m.group(2) or ""]
    return int(m.group(1)) * unit


CPUS = len(os.sched_getaffinity(0))
DURATION = env_int("BENCH_DURATION", 10, 3)
ROUNDS = env_int("BENCH_ROUNDS", 5, 3)
CONNECTIONS = env_int("BENCH_CONNECTIONS", 64, 64)
THREADS = env_int("BENCH_THREADS", 2, 2)
IDS = env_int("BENCH_IDS", 1000, 1000)
WORKERS = env_int("BENCH_WORKERS", CPUS, CPUS)
LOG_ROUNDS = env_int("BENCH_LOG_ROUNDS", 1, 1)
MISS_DURATION = env_int("BENCH_MISS_DURATION", 10, 3)
MISS_ROUNDS = env_int("BENCH_MISS_ROUNDS", 2, 1)
MISS_CONNECTIONS = env_int("BENCH_MISS_CONNECTIONS", 1, 1)
MISS_PACE_MS = env_int("BENCH_MISS_PACE_MS", 0, 0)
STAMPEDE = env_int("BENCH_STAMPEDE", 500, 500)
STAMPEDE_DELAY_MS = env_int("BENCH_STAMPEDE_DELAY_MS", 50, 50)
MEM_ENTRIES = env_int("BENCH_MEM_ENTRIES", 50000, 10000)
MEM_MAX_BYTES = parse_size(os.environ.get("BENCH_MEM_MAX_BYTES", "1GiB"))
BOUND_MAX = parse_size(os.environ.get("BENCH_BOUND_MAX") or ("16MiB" if QUICK else "64MiB"))
BOUND_FACTOR = env_int("BENCH_BOUND_FACTOR", 4, 4)
FILL_CONNECTIONS = env_int("BENCH_FILL_CONNECTIONS", 16, 16)
WAIT_QUIET = env_int("BENCH_WAIT_QUIET", 0, 0)
ENC_ROUNDS = env_int("BENCH_ENC_ROUNDS", 2, 1)
ENC_DURATION = env_int("BENCH_ENC_DURATION", 5, 3)
H2_CONNECTIONS = env_int("BENCH_H2_CONNECTIONS", 4, 4)
H2_STREAMS = env_int("BENCH_H2_STREAMS", 16, 16)
PACED_FRACTION = env_int("BENCH_PACED_FRACTION", 60, 60)
PACED_RATE = env_int("BENCH_PACED_RATE", 0, 0)
PACED_DURATION = env_int("BENCH_PACED_DURATION", 10, 3)
PACED_ROUNDS = env_int("BENCH_PACED_ROUNDS", 3, 1)
PACED_CONNECTIONS = env_int("BENCH_PACED_CONNECTIONS", 64, 64)
# nginx "at its best": what the tuned nginx adds to bench/nginx.conf.in (http level).
NGINX_TUNING = os.environ.get("BENCH_NGINX_TUNING") or "open_file_cache max=20000 inactive=1h; open_file_cache_valid 1h;"
NGINX_REUSEPORT = env_int("BENCH_NGINX_REUSEPORT", 1, 1) != 0  # the tuned nginx: `listen ... reuseport`
# The tuned nginx's access log in the logging rounds, as operators run it: buffered.
NGINX_BUFFERED_LOG = f"{os.devnull} combined buffer=64k flush=1s"
ALL_PHASES = ["hits", "logging", "paced", "one_core", "h2", "encodings", "miss", "stampede", "memory", "bound"]
PHASES = [p.strip() for p in os.environ.get("BENCH_PHASES", ",".join(ALL_PHASES)).split(",") if p.strip()]
for _phase in PHASES:
    if _phase not in ALL_PHASES:
        sys.exit(f"bench: unknown phase {_phase!r} in BENCH_PHASES (known: {', '.join(ALL_PHASES)})")

TARGET_DIR = os.path.abspath(os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"))
# bench/tools (the ceiling server and the paced client) builds apart from the main crate.
TOOLS_TARGET_DIR = os.path.join(TARGET_DIR, "bench-tools")


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
