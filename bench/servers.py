"""bench/run's tools and processes: installing what is missing, building, and the servers it starts and stops by pid."""

import datetime
import grp
import hashlib
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import client_side
from settings import *  # noqa: F401,F403


# ---------------------------------------------------------------- tools

def sudo_prefix():
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        return ["sudo", "-n"]
    sys.exit("bench: need root (or sudo) to install packages")


def find_binary(name):
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def ensure_tool(binary, packages):
    """The path of `binary`, installing the first Debian package that works when it is missing."""
    path = find_binary(binary)
    if path:
        return path
    log(f"{binary} not found: installing from Debian ({' or '.join(packages)})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in range(2):
        if attempt == 1:
            subprocess.run(sudo_prefix() + ["apt-get", "update", "-qq"], env=env, check=False)
        for package in packages:
            done = subprocess.run(sudo_prefix() + ["apt-get", "install", "-y", "-qq", package],
                                  env=env, stdout=subprocess.DEVNULL, check=False)
            path = find_binary(binary)
            if done.returncode == 0 and path:
                return path
    sys.exit(f"bench: could not install {binary}")


def build():
    if os.environ.get("BENCH_SKIP_BUILD"):
        log("BENCH_SKIP_BUILD set: using the binaries already built")
    else:
        log("cargo build --release --bins")
        env = dict(os.environ, CARGO_TARGET_DIR=TARGET_DIR)
        subprocess.run(["cargo", "build", "--release", "--bins", "--quiet"], cwd=REPO, env=env, check=True)
    binaries = {}
    for name in ("ayra-cache", "ayra-standin"):
        path = os.path.join(TARGET_DIR, "release", name)
        if not os.access(path, os.X_OK):
            sys.exit(f"bench: {name} was not built (looked in CARGO_TARGET_DIR/release)")
        binaries[name] = path
    return binaries


def command_output(args, stderr=False):
    try:
        done = subprocess.run(args, capture_output=True, text=True, check=False)
    except OSError:
        return ""
    return (done.stderr if stderr else done.stdout).strip()


def machine_info(nginx, wrk):
    model = ""
    for line in command_output(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
    mem_kib = 0
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    commit = command_output(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]) or "unknown"
    dirty = command_output(["git", "-C", REPO, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"])
    nginx_version = command_output([nginx, "-v"], stderr=True).replace("nginx version: ", "")
    wrk_version = command_output([wrk, "-v"]).splitlines()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": CPUS,
        "model": model or "unknown",
        "kernel": os.uname().release,
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "commit": commit + (" + uncommitted changes in src/" if dirty else ""),
        "nginx": nginx_version,
        "wrk": (wrk_version[0].split(" [")[0] if wrk_version else "wrk"),
        "rustc": command_output(["rustc", "-V"]),
    }


# ---------------------------------------------------------------- processes

CHILDREN = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Child:
    """A process this script started; stopped by its pid only."""

    def __init__(self, name, args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stop_signal=signal.SIGTERM,
                 env=None):
        self.name = name
        self.stop_signal = stop_signal
        self.proc = subprocess.Popen(args, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env)
        self.pid = self.proc.pid
        CHILDREN.append(self)

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            try:
                os.kill(self.pid, self.stop_signal)
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        if self in CHILDREN:
            CHILDREN.remove(self)


def stop_all():
    for child in list(reversed(CHILDREN)):
        child.stop()


def wait_ready(child, port, path="/healthz", timeout=15.0, log_file=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            detail = ""
            if log_file and os.path.exists(log_file):
                with open(log_file) as f:
                    detail = "\n" + f.read()[-3000:]
            sys.exit(f"bench: {child.name} exited with status {child.proc.returncode}{detail}")
        try:
            status, _, _ = http_request(port, "GET", path, timeout=1)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"bench: {child.name} did not answer {path} on port {port}")


def http_request(port, method, path, body=None, headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def proc_rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def pin(pids, cpu):
    """Every thread of `pids` on CPU `cpu` only (threads made later inherit it)."""
    for pid in pids:
        subprocess.run(["taskset", "-a", "-c", "-p", str(cpu), str(pid)], stdout=subprocess.DEVNULL, check=True)


def proc_tree(pid):
    """pid and its children (nginx: master and workers)."""
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return pids


def cpu_split(pids):
    """(user, system) CPU seconds of these processes so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except OSError:
            pass
    return user / ticks, system / ticks


def cpu_seconds(pids):
    return sum(cpu_split(pids))


class Standin:
    def __init__(self, binary, workdir):
        self.log_file = os.path.join(workdir, "standin.log")
        self.child = Child("ayra-standin", [binary, "--listen", "127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=open(self.log_file, "w"))
        line = self.child.proc.stdout.readline().decode()
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if not m:
            sys.exit(f"bench: the stand-in did not announce its port: {line!r}")
        self.port = int(m.group(1))

    def reset(self):
        status, _, _ = http_request(self.port, "POST", "/_standin/reset")
        assert status == 204, status

    def set_knobs(self, conv_id, knobs):
        status, _, body = http_request(self.port, "PUT", f"/_standin/conversations/{conv_id}",
                                       body=json.dumps(knobs), headers={"content-type": "application/json"})
        if status != 204:
            sys.exit(f"bench: the stand-in refused knobs {knobs}: {status} {body[:200]!r}")

    def stats(self):
        status, _, body = http_request(self.port, "GET", "/_standin/stats", timeout=30)
        assert status == 200, status
        return json.loads(body)


class AyraCache:
    def __init__(self, binary, workdir, name, upstream_port, max_bytes, level="warn", log_to_devnull=False,
                 compression=True, workers=0):
        self.name = name
        self.port = free_port()
        self.admin_port = free_port()
        self.config = os.path.join(workdir, f"{name}.toml")
        with open(self.config, "w") as f:
            f.write(f"""# written by bench/run
[server]
listen = "127.0.0.1:{self.port}"
admin_listen = "127.0.0.1:{self.admin_port}"
worker_threads = {workers}

[upstream]
base_url = "http://127.0.0.1:{upstream_port}"
timeout = "10s"

[cache]
max_bytes = {max_bytes}
{"" if compression else "compression = []"}

[admin]
token_sha256 = "{hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()}"

[log]
format = "json"
level = "{level}"
""")
        self.log_file = None if log_to_devnull else os.path.join(workdir, f"{name}.log")
        stderr = subprocess.DEVNULL if log_to_devnull else open(self.log_file, "w")
        env = None
        if not compression:
            # The config file says it; an inherited AYRA_CACHE__CACHE__COMPRESSION must not override it.
            env = {k: v for k, v in os.environ.items() if k != "AYRA_CACHE__CACHE__COMPRESSION"}
        self.child = Child(name, [binary, "--config", self.config], stderr=stderr, env=env)
        wait_ready(self.child, self.port, log_file=self.log_file)

    def pids(self):
        return [self.child.pid]

    def rss_kib(self, field="VmRSS"):
        return proc_rss_kib(self.child.pid, field)

    def stats(self):
        status, _, body = http_request(self.admin_port, "GET", "/admin/stats",
                                       headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        if status != 200:
            return {}
        return json.loads(body)

    def stop(self):
        self.child.stop()


def nginx_user_directive():
    """Workers run as the invoking user (like ayra-cache), so they can write
    under the private temp dir; the `user` directive is only allowed as root."""
    if os.geteuid() != 0:
        return ""
    return f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"


class NginxProcess:
    """An nginx this script runs from a generated config: a non-daemon child with its own prefix."""

    def start(self, binary, workdir, name, template, replacements):
        self.name = name
        self.prefix = os.path.join(workdir, name)
        os.makedirs(self.prefix, exist_ok=True)
        with open(template) as f:
            conf = f.read()
        replacements = dict(replacements, USER_DIRECTIVE=nginx_user_directive(), PREFIX=self.prefix)
        for key, value in replacements.items():
            conf = conf.replace(f"@{key}@", str(value))
        self.config = os.path.join(self.prefix, "nginx.conf")
        with open(self.config, "w") as f:
            f.write(conf)
        error_log = os.path.join(self.prefix, "error.log")
        args = [binary, "-p", self.prefix + "/", "-c", self.config, "-e", error_log, "-g", "daemon off;"]
        test = subprocess.run(args[:-2] + ["-t", "-q"], capture_output=True, text=True)
        if test.returncode != 0:
            sys.exit(f"bench: nginx refused the generated config:\n{test.stderr}")
        self.child = Child(name, args, stderr=open(os.path.join(self.prefix, "stderr.log"), "w"),
                           stop_signal=signal.SIGQUIT)
        wait_ready(self.child, self.port, log_file=error_log)

    def config_text(self, workdir):
        """The config as run, with the temp dir written `<tmp>` (results name no machine path)."""
        with open(self.config) as f:
            return f.read().replace(workdir, "<tmp>")

    def pids(self):
        return proc_tree(self.child.pid)

    def stop(self):
        self.child.stop()


class Nginx(NginxProcess):
    def __init__(self, binary, workdir, name, upstream_port, access_log="off", h2=False, compression=None,
                 workers=WORKERS, tuning="", reuseport=False):
        """h2: also listen for HTTP/2 with prior knowledge on self.h2_port;
        compression: the http-level gzip/brotli directives (client_side.nginx_compression);
        tuning: http-level directives added to bench/nginx.conf.in (the tuned nginx: NGINX_TUNING);
        reuseport: `listen ... reuseport` (the tuned nginx: NGINX_REUSEPORT)."""
        self.port = free_port()
        self.h2_port = free_port() if h2 else None
        self.start(binary, workdir, name, NGINX_TEMPLATE, {
            "WORKERS": workers,
            "UPSTREAM_PORT": upstream_port,
            "LISTEN_PORT": self.port,
            "ACCESS_LOG": access_log,
            "LOAD_MODULES": (compression or {}).get("modules", ""),
            "COMPRESSION": (compression or {}).get("directives", ""),
            "TUNING": tuning,
            "LISTEN_OPTIONS": " reuseport" if reuseport else "",
            "H2_LISTEN": client_side.nginx_h2_listen(binary, self.h2_port, reuseport) if h2 else "",
        })
