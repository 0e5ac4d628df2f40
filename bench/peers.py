"""bench/run's peers beside ayra-cache and the cache nginx: the hyper ceiling, and the miss phase's static upstream and plain proxy.

bench/tools (a Cargo package of its own, not part of the product) holds the
ceiling server and the paced client; it is built here with `cargo build
--release --locked` into CARGO_TARGET_DIR/bench-tools (or target/bench-tools).
"""

import os
import re
import subprocess
import sys

from settings import *  # noqa: F401,F403
from servers import Child, NginxProcess, free_port, http_request, proc_tree, wait_ready


# ---------------------------------------------------------------- bench/tools

def build_tools():
    """The paths of ayra-ceiling and ayra-paced, built unless BENCH_SKIP_BUILD."""
    if not os.environ.get("BENCH_SKIP_BUILD"):
        log("cargo build --release (bench/tools: the ceiling server and the paced client)")
        env = dict(os.environ, CARGO_TARGET_DIR=TOOLS_TARGET_DIR)
        subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--manifest-path", TOOLS_MANIFEST],
                       env=env, check=True)
    tools = {}
    for name in ("ayra-ceiling", "ayra-paced"):
        path = os.path.join(TOOLS_TARGET_DIR, "release", name)
        if not os.access(path, os.X_OK):
            sys.exit(f"bench: {name} was not built (looked in CARGO_TARGET_DIR/bench-tools/release)")
        tools[name] = path
    return tools


def bench_ids():
    return [f"conv_bench_{i:04d}" for i in range(IDS)]


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("".join(f"{line}\n" for line in lines))
    return path


class Ceiling:
    """ayra-ceiling: plain hyper, one current-thread runtime per CPU each with its own
    SO_REUSEPORT listener, answering the HIT load's ids from a HashMap of prebuilt
    bodies it fetched once from the stand-in."""

    def __init__(self, binary, workdir, name, upstream_port, workers=0):
        self.name = name
        ids_file = write_lines(os.path.join(workdir, f"{name}-ids.txt"), bench_ids())
        self.log_file = os.path.join(workdir, f"{name}.log")
        self.child = Child(name, [binary, "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream_port}",
                                  "--ids-file", ids_file, "--authorization", f"Bearer {TOKEN}",
                                  "--workers", str(workers)],
                           stdout=subprocess.PIPE, stderr=open(self.log_file, "w"))
        line = self.child.proc.stdout.readline().decode()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            with open(self.log_file) as f:
                sys.exit(f"bench: the ceiling did not start: {line!r}\n{f.read()[-2000:]}")
        self.port = int(m.group(1))
        wait_ready(self.child, self.port, log_file=self.log_file)

    def pids(self):
        return [self.child.pid]

    def stop(self):
        self.child.stop()


# ---------------------------------------------------------------- the miss phase's upstream and reference proxy

def fetch_bodies(standin, directory):
    """Each HIT-load id's body from the stand-in, written as DIR/v1/conversations/{id}."""
    target = os.path.join(directory, "v1", "conversations")
    os.makedirs(target, exist_ok=True)
    for conv_id in bench_ids():
        status, _, body = http_request(standin.port, "GET", f"/v1/conversations/{conv_id}",
                                       headers={"authorization": f"Bearer {TOKEN}"})
        if status != 200:
            sys.exit(f"bench: the stand-in answered {status} for {conv_id}")
        with open(os.path.join(target, conv_id), "wb") as f:
            f.write(body)
    return directory


class NginxStatic(NginxProcess):
    """nginx serving those bodies as files (one worker, open_file_cache): a fast, steady upstream."""

    def __init__(self, binary, workdir, name, standin):
        self.port = free_port()
        root = fetch_bodies(standin, os.path.join(workdir, f"{name}-root"))
        self.start(binary, workdir, name, NGINX_STATIC_TEMPLATE, {"LISTEN_PORT": self.port, "ROOT": root})


class NginxProxy(NginxProcess):
    """nginx as a plain reverse proxy, no cache, keep-alive upstream: the reference for what a proxy adds."""

    def __init__(self, binary, workdir, name, upstream_port):
        self.port = free_port()
        self.start(binary, workdir, name, NGINX_PROXY_TEMPLATE,
                   {"LISTEN_PORT": self.port, "UPSTREAM_PORT": upstream_port, "WORKERS": WORKERS})


__all__ = ["build_tools", "bench_ids", "write_lines", "Ceiling", "NginxStatic", "NginxProxy", "proc_tree"]
