#!/usr/bin/python3
"""Outpost side-by-side benchmark (issue 3). Driven by bench/run; see bench/README.md.

Every server this script starts runs from its own config under one temp dir, listens on
127.0.0.1 only, and is stopped by PID at the end (also on Ctrl-C or an error).
The server under test is pinned to CPU 0, the load generator and the origin to CPU 1.
"""

import argparse
import datetime
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import http.client

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SERVER_CPU = "0"
CLIENT_CPU = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

SIZES = {"1k": 1024, "16k": 16 * 1024, "128k": 128 * 1024, "1m": 1024 * 1024}
MISS_BODY_PAD = "x" * 960  # the origin's miss body: the URI plus ~1 KiB

# ----------------------------------------------------------------------------------------
# rows

ROWS = {
    # name: (kind, object path, description)
    "h1-1k": ("h1", "/f/1k", "HTTP/1.1 keep-alive hits, 1 KiB (wrk -c64 -t1)"),
    "h1-16k": ("h1", "/f/16k", "HTTP/1.1 keep-alive hits, 16 KiB (wrk -c64 -t1)"),
    "h1-128k": ("h1", "/f/128k", "HTTP/1.1 keep-alive hits, 128 KiB (wrk -c64 -t1)"),
    "h1-1m": ("h1", "/f/1m", "HTTP/1.1 keep-alive hits, 1 MiB (wrk -c64 -t1)"),
    "h2-1k": ("h2", "/f/1k", "HTTP/2 over TLS hits, 1 KiB (h2load -c32 -m16)"),
    "h2-128k": ("h2", "/f/128k", "HTTP/2 over TLS hits, 128 KiB (h2load -c32 -m16)"),
    "tls-conn": ("tlsconn", "/f/1k", "new TLS connections/s: one 1 KiB hit per full handshake "
                 "(wrk -c64 -t1, Connection: close, ECDSA P-256)"),
    "miss": ("miss", "/u/", "miss path: a unique URL per request (wrk -c64 -t1, lua)"),
    "h3-1k": ("h3", "/f/1k", "HTTP/3 hits, 1 KiB (h3load -c32 -m16; bench/h3load)"),
    "h3-128k": ("h3", "/f/128k", "HTTP/3 hits, 128 KiB (h3load -c32 -m16; bench/h3load)"),
    "tiered": ("tiered", "/u/", "miss path through tiers: origin direct, nginx proxy_pass, "
               "edge -> origin, edge -> shield -> origin (wrk -c64 -t1, lua; latency also "
               "with -c1)"),
}
NA_ROWS = {}
ALL_ROWS = ["h1-1k", "h1-16k", "h1-128k", "h1-1m", "h2-1k", "h2-128k", "tls-conn", "miss",
            "h3-1k", "h3-128k", "tiered"]
QUICK_ROWS = ["h1-1k", "h1-1m", "h2-1k", "tls-conn", "miss", "h3-1k", "tiered"]

ALL_PEERS = ["nginx-ceiling", "nginx-static-1k", "nginx-proxy-cache", "nginx-proxy-pass",
             "varnish", "ats", "outpost", "outpost-tiered"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=20.0, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


# ----------------------------------------------------------------------------------------
# process accounting: /proc

def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(pid):
    """pid and all its live descendants."""
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if os.path.exists("/proc/%d" % p):
            out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_ticks(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return None
    fields = st[st.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14, 15)


def cpu_snapshot(pids):
    snap = {}
    for p in pids:
        t = cpu_ticks(p)
        if t is not None:
            snap[p] = t
    return snap


def cpu_seconds(before, after):
    ticks = 0
    for p, t in after.items():
        ticks += t - before.get(p, 0)
    return ticks / CLK_TCK


def system_busy_s():
    """Busy CPU-seconds of the whole machine so far (all CPUs), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / CLK_TCK


def status_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def mapped_file_rss_kb(pid, suffix):
    """Resident kB of the mappings of files whose name ends with suffix (e.g. the LMDB map)."""
    total, cur = 0, False
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                parts = line.split()
                if not parts:
                    continue
                if re.match(r"^[0-9a-f]+-[0-9a-f]+$", parts[0]):
                    cur = len(parts) >= 6 and parts[-1].endswith(suffix)
                elif cur and parts[0] == "Rss:":
                    total += int(parts[1])
    except OSError:
        pass
    return total


class RssSampler(threading.Thread):
    def __init__(self, pids, interval=0.25):
        """pids: a function returning the processes to sum (they may change)."""
        super().__init__(daemon=True)
        self.pids, self.interval, self.peak_kb = pids, interval, 0
        self.stop_ev = threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            kb = sum(status_kb(p, "VmRSS") for p in self.pids())
            self.peak_kb = max(self.peak_kb, kb)
            self.stop_ev.wait(self.interval)

    def stop(self):
        self.stop_ev.set()
        self.join()


# ----------------------------------------------------------------------------------------
# the environment: temp dir, cert, started processes

class Env:
    def __init__(self, keep=False):
        self.dir = tempfile.mkdtemp(prefix="outpost-bench-")
        os.chmod(self.dir, 0o755)  # varnish's child and nginx workers may run as other users
        self.keep = keep
        self.procs = []  # (name, Popen)
        self.pidfile = os.environ.get("BENCH_PIDFILE") or os.path.join(self.dir, "pids")
        self.cert = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def make_cert(self):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", self.key, "-out",
                        self.cert, "-days", "2", "-subj", "/CN=127.0.0.1"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.chmod(self.key, 0o644)

    def start(self, name, argv, cpu, cwd=None, env=None, stdout_name=None):
        out = open(self.path((stdout_name or name) + ".out"), "wb")
        p = subprocess.Popen(["taskset", "-c", cpu] + argv, cwd=cwd or self.dir, env=env,
                             stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True)
        out.close()
        self.procs.append((name, p))
        with open(self.pidfile, "a") as f:
            f.write("%d %s\n" % (p.pid, argv[0]))
        return p

    def stop(self, proc, sig=signal.SIGTERM, timeout=15.0):
        if proc.poll() is not None:
            return
        family = tree(proc.pid)
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # descendants the parent did not take down (only the ones this run started)
        for p in family[1:]:
            if os.path.exists("/proc/%d" % p):
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def cleanup(self):
        for name, p in reversed(self.procs):
            self.stop(p)
        self.procs = []
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            log("kept %s" % self.dir)


# ----------------------------------------------------------------------------------------
# nginx (origin, ceiling, fixed 1 KiB, proxy_cache)

NGINX_MAIN = """\
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server_tokens off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
{body}
}}
"""

# The origin's content, also what the ceiling serves directly.
ORIGIN_LOCATIONS = """\
        root {www};
        location /f/ {{
            open_file_cache max=100;
            add_header Cache-Control "public, max-age=3600";
        }}
        location /u/ {{
            add_header Cache-Control "public, max-age=3600";
            return 200 "$request_uri {pad}\\n";
        }}
"""


def nginx_user():
    return "user root root;" if os.geteuid() == 0 else ""


def write_nginx(env, name, body):
    d = env.path(name)
    os.makedirs(d, exist_ok=True)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_MAIN.format(user=nginx_user(), dir=d, cert=env.cert, key=env.key,
                                  body=body))
    return d, conf


def start_nginx(env, name, body, port, cpu):
    d, conf = write_nginx(env, name, body)
    argv = [shutil.which("nginx"), "-p", d, "-e", os.path.join(d, "error.log"), "-c", conf,
            "-g", "daemon off;"]
    p = env.start(name, argv, cpu)
    if not wait_port(port, proc=p):
        raise RuntimeError("%s did not start: %s" % (name, tail(env.path(name + ".out"))))
    return p


def tail(path, n=2000):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode(errors="replace")
    except OSError:
        return ""


class Origin:
    """The static origin on CPU 1: files of 1 KiB .. 1 MiB and a unique body per /u/ URL."""

    def __init__(self, env):
        self.env = env
        self.port = free_port()
        self.www = env.path("www")
        os.makedirs(os.path.join(self.www, "f"), exist_ok=True)
        for n, size in SIZES.items():
            with open(os.path.join(self.www, "f", n), "wb") as f:
                f.write(os.urandom(size))
        self.log = env.path("origin", "access.log")
        body = """\
    log_format uri '$request_uri';
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        access_log {log} uri;
{loc}
    }}""".format(port=self.port, log=self.log,
                 loc=ORIGIN_LOCATIONS.format(www=self.www, pad=MISS_BODY_PAD))
        self.proc = start_nginx(env, "origin", body, self.port, CLIENT_CPU)

    def fetches(self):
        """Lines in the origin's access log so far (= requests that reached the origin)."""
        try:
            with open(self.log, "rb") as f:
                return f.read().count(b"\n")
        except OSError:
            return 0


class Peer:
    name = "?"
    hit_header = None  # (header, predicate) telling a cache hit
    tls = False
    caches = True
    only_rows = None  # None = every row
    only_rows_reason = "a fixed 1 KiB response: 1 KiB rows only"
    skip_reason = None
    tiers = None  # proxies between client and origin content, for the tiered row; None = n/a

    def __init__(self, env, origin):
        self.env, self.origin = env, origin
        self.port = free_port()
        self.tls_port = free_port()
        self.proc = None

    def available(self):
        return None  # or a reason

    def start(self):
        raise NotImplementedError

    def stop(self):
        if self.proc is not None:
            self.env.stop(self.proc)
            self.proc = None

    def row_na(self, row):
        kind = ROWS[row][0]
        if self.only_rows is not None and row not in self.only_rows:
            return self.only_rows_reason
        if kind == "tiered" and self.tiers is None:
            return "not in the tiered comparison (its miss path is the miss row)"
        if kind in ("h2", "tlsconn") and not self.tls:
            return self.no_tls_reason
        if kind == "h3" and not self.h3:
            return self.no_h3_reason
        return None

    no_tls_reason = "no TLS"
    h3 = False
    no_h3_reason = "no HTTP/3 in the Debian 12 build"

    def is_hit(self, headers):
        return None

    def extra_stats(self):
        return {}

    def server_pids(self):
        """Every process of the server under test: CPU and memory are summed over them."""
        return tree(self.proc.pid) if self.proc is not None else []


class NginxCeiling(Peer):
    name = "nginx-ceiling"
    tls = True
    caches = False
    tiers = 0  # the origin's content served directly: the tiered row's baseline

    def available(self):
        return None if shutil.which("nginx") else "nginx not installed"

    def start(self):
        body = """\
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        listen 127.0.0.1:{tport} ssl http2 reuseport backlog=4096;
        access_log off;
{loc}
    }}""".format(port=self.port, tport=self.tls_port,
                 loc=ORIGIN_LOCATIONS.format(www=self.origin.www, pad=MISS_BODY_PAD))
        self.proc = start_nginx(self.env, self.name, body, self.port, SERVER_CPU)


class NginxStatic1k(Peer):
    name = "nginx-static-1k"
    tls = True
    caches = False
    only_rows = ("h1-1k", "h2-1k", "tls-conn")

    def available(self):
        return None if shutil.which("nginx") else "nginx not installed"

    def start(self):
        body = """\
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        listen 127.0.0.1:{tport} ssl http2 reuseport backlog=4096;
        access_log off;
        location / {{
            add_header Cache-Control "public, max-age=3600";
            return 200 "{body}";
        }}
    }}""".format(port=self.port, tport=self.tls_port, body="o" * 1023 + "\\n")
        self.proc = start_nginx(self.env, self.name, body, self.port, SERVER_CPU)


class NginxProxyCache(Peer):
    name = "nginx-proxy-cache"
    tls = True
    tiers = 1

    def available(self):
        return None if shutil.which("nginx") else "nginx not installed"

    def start(self):
        cache = self.env.path(self.name, "cache")
        os.makedirs(cache, exist_ok=True)
        body = """\
    proxy_cache_path {cache} levels=1:2 keys_zone=edge:64m max_size=2g inactive=1h
                     use_temp_path=off;
    upstream origin {{
        server 127.0.0.1:{oport};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        listen 127.0.0.1:{tport} ssl http2 reuseport backlog=4096;
        access_log off;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache edge;
            proxy_cache_lock on;
            # no proxy_cache_valid: the origin's Cache-Control decides
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}""".format(cache=cache, oport=self.origin.port, port=self.port, tport=self.tls_port)
        self.proc = start_nginx(self.env, self.name, body, self.port, SERVER_CPU)

    def is_hit(self, headers):
        return headers.get("x-cache-status") == "HIT"


class NginxProxyPass(Peer):
    """nginx proxy_pass to the origin without a cache: the cost of one plain proxy tier."""
    name = "nginx-proxy-pass"
    caches = False
    tiers = 1
    only_rows = ("tiered",)
    only_rows_reason = "no cache: only in the tiered row"

    def available(self):
        return None if shutil.which("nginx") else "nginx not installed"

    def start(self):
        body = """\
    upstream origin {{
        server 127.0.0.1:{oport};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        access_log off;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}""".format(oport=self.origin.port, port=self.port)
        self.proc = start_nginx(self.env, self.name, body, self.port, SERVER_CPU)


# ----------------------------------------------------------------------------------------
# Varnish

class Varnish(Peer):
    name = "varnish"
    no_tls_reason = "Varnish has no TLS"

    def available(self):
        return None if shutil.which("varnishd") else "varnishd not installed"

    def start(self):
        work = self.env.path("varnish")
        os.makedirs(work, exist_ok=True)
        argv = [shutil.which("varnishd"), "-F", "-n", work,
                "-a", "127.0.0.1:%d" % self.port, "-b", "127.0.0.1:%d" % self.origin.port,
                "-T", "none", "-s", "malloc,1g",
                "-p", "thread_pools=1", "-p", "thread_pool_min=80", "-p", "thread_pool_max=500"]
        self.proc = self.env.start(self.name, argv, SERVER_CPU)
        if not wait_port(self.port, proc=self.proc):
            raise RuntimeError("varnish did not start: " + tail(self.env.path("varnish.out")))

    def is_hit(self, headers):
        return len(headers.get("x-varnish", "").split()) == 2


# ----------------------------------------------------------------------------------------
# Apache Traffic Server: a private runroot (runroot.yaml) so that nothing of /etc/trafficserver,
# /var/cache/trafficserver or /run/trafficserver is used.

class TrafficServer(Peer):
    name = "ats"
    tls = True

    def available(self):
        return None if shutil.which("traffic_server") else "traffic_server not installed"

    def start(self):
        root = self.env.path("ats")
        for d in ("etc", "var", "run", "log", "cache"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        etc = os.path.join(root, "etc")
        if os.path.isdir("/etc/trafficserver"):  # the defaults (body_factory, ip_allow ...)
            shutil.copytree("/etc/trafficserver", etc, dirs_exist_ok=True)
        libdir = "/usr/lib/trafficserver"
        with open(os.path.join(root, "runroot.yaml"), "w") as f:
            f.write("\n".join("%s: %s" % kv for kv in [
                ("prefix", root), ("exec_prefix", "/usr"), ("bindir", "/usr/bin"),
                ("sbindir", "/usr/sbin"), ("sysconfdir", etc),
                ("datadir", os.path.join(root, "cache")), ("includedir", "/usr/include"),
                ("libdir", libdir), ("libexecdir", libdir + "/modules"),
                ("localstatedir", os.path.join(root, "var")),
                ("runtimedir", os.path.join(root, "run")), ("logdir", os.path.join(root, "log")),
                ("cachedir", os.path.join(root, "cache"))]) + "\n")
        records = {
            "proxy.config.http.server_ports":
                ("STRING", "%d %d:ssl" % (self.port, self.tls_port)),
            "proxy.config.exec_thread.autoconfig": ("INT", 0),
            "proxy.config.exec_thread.limit": ("INT", 1),
            "proxy.config.accept_threads": ("INT", 0),
            "proxy.config.task_threads": ("INT", 1),
            "proxy.config.cache.threads_per_disk": ("INT", 1),
            "proxy.config.admin.user_id": ("STRING", "#-1"),  # run as the invoking user
            "proxy.config.reverse_proxy.enabled": ("INT", 1),
            "proxy.config.url_remap.remap_required": ("INT", 1),
            "proxy.config.cache.ram_cache.size": ("INT", 1 << 30),
            "proxy.config.cache.ram_cache_cutoff": ("INT", 4 << 20),
            "proxy.config.log.logging_enabled": ("INT", 0),
            "proxy.config.http.keep_alive_enabled_out": ("INT", 1),
            "proxy.config.http.insert_age_in_response": ("INT", 1),
            "proxy.config.http.cache.required_headers": ("INT", 2),
            "proxy.config.net.connections_throttle": ("INT", 10000),
            "proxy.config.ssl.server.cert.path": ("STRING", self.env.dir),
            "proxy.config.ssl.server.private_key.path": ("STRING", self.env.dir),
            "proxy.config.diags.debug.enabled": ("INT", 0),
        }
        with open(os.path.join(etc, "records.config"), "w") as f:
            for k, (t, v) in records.items():
                f.write("CONFIG %s %s %s\n" % (k, t, v))
        with open(os.path.join(etc, "ssl_multicert.config"), "w") as f:
            f.write("dest_ip=* ssl_cert_name=cert.pem ssl_key_name=key.pem\n")
        with open(os.path.join(etc, "storage.config"), "w") as f:
            f.write("%s 2G\n" % os.path.join(root, "cache"))
        with open(os.path.join(etc, "volume.config"), "w") as f:
            f.write("")
        with open(os.path.join(etc, "remap.config"), "w") as f:
            f.write("map http://127.0.0.1:%d http://127.0.0.1:%d\n" % (self.port, self.origin.port))
            f.write("map https://127.0.0.1:%d http://127.0.0.1:%d\n"
                    % (self.tls_port, self.origin.port))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TS_", "PROXY_"))}
        argv = [shutil.which("traffic_server"), "--run-root=" + os.path.join(root, "runroot.yaml")]
        self.proc = self.env.start(self.name, argv, SERVER_CPU, cwd=root, env=env)
        if not wait_port(self.port, timeout=60, proc=self.proc):
            raise RuntimeError("traffic_server did not start: "
                               + tail(os.path.join(root, "log", "diags.log")))
        # the port opens before the cache is enabled: wait for it
        end = time.time() + 30
        while time.time() < end and "cache enabled" not in tail(
                os.path.join(root, "log", "diags.log"), 100000):
            time.sleep(0.2)

    def is_hit(self, headers):
        return "age" in headers  # ATS adds Age only to responses served from its cache


# ----------------------------------------------------------------------------------------
# Outpost

class Outpost(Peer):
    name = "outpost"
    no_tls_reason = "Outpost has no TLS yet (outpostd --help has no --tls-listen)"
    tiers = 1  # edge -> origin

    def __init__(self, env, origin):
        super().__init__(env, origin)
        self.bin = os.environ.get("OUTPOSTD") or os.path.join(REPO, "build", "outpostd")
        self.admin_port = free_port()
        self.help = ""
        if os.access(self.bin, os.X_OK):
            try:
                self.help = subprocess.run([self.bin, "--help"], capture_output=True, text=True,
                                           timeout=10).stdout
            except Exception:
                self.help = ""
        self.tls = "--tls-listen" in self.help
        self.h3 = self.tls and "--h3-listen" in self.help

    def available(self):
        if not os.access(self.bin, os.X_OK):
            return "%s not built (make)" % os.path.relpath(self.bin, REPO)
        return None

    def start(self):
        cache = self.env.path("outpost", "cache")
        os.makedirs(cache, exist_ok=True)
        argv = [self.bin, "--listen", "127.0.0.1:%d" % self.port,
                "--origin", "http://127.0.0.1:%d" % self.origin.port, "--cache-dir", cache,
                "--workers", "1", "--admin", "127.0.0.1:%d" % self.admin_port,
                "--set", "access_log=off"]
        if self.tls:  # hook: the flag names of the TLS issue
            argv += ["--tls-listen", "127.0.0.1:%d" % self.tls_port]
            argv += ["--cert", self.env.cert, "--key", self.env.key]
        if self.h3:  # UDP, on the port number of the TLS listener
            argv += ["--h3-listen", "127.0.0.1:%d" % self.tls_port]
        self.proc = self.env.start(self.name, argv, SERVER_CPU)
        if not wait_port(self.port, proc=self.proc):
            raise RuntimeError("outpostd did not start: " + tail(self.env.path("outpost.out")))

    def is_hit(self, headers):
        return headers.get("x-cache") == "HIT"

    def extra_stats(self):
        if self.proc is None:
            return {}
        kb = sum(mapped_file_rss_kb(p, ".mdb") for p in self.server_pids())
        return {"lmdb_resident_kib": kb}


class OutpostTiered(Outpost):
    """An edge whose misses go to a shield (outpostd --role shield) in front of the origin:
    two Outpost processes, both on the server CPU, their CPU and memory summed."""
    name = "outpost-tiered"
    tiers = 2
    only_rows = ("tiered",)
    only_rows_reason = "edge -> shield: only in the tiered row"

    def __init__(self, env, origin):
        super().__init__(env, origin)
        self.tls = self.h3 = False
        self.shield_port = free_port()
        self.shield_admin_port = free_port()
        self.shield = None

    def available(self):
        why = super().available()
        if why is None and "--shield" not in self.help:
            why = "outpostd --help has no --shield"
        return why

    def start(self):
        def argv(name, port, admin):
            cache = self.env.path(name, "cache")
            os.makedirs(cache, exist_ok=True)
            return [self.bin, "--listen", "127.0.0.1:%d" % port,
                    "--origin", "http://127.0.0.1:%d" % self.origin.port, "--cache-dir", cache,
                    "--workers", "1", "--admin", "127.0.0.1:%d" % admin,
                    "--set", "access_log=off", "--set", "node_name=bench-" + name]
        self.shield = self.env.start("outpost-shield",
                                     argv("shield", self.shield_port, self.shield_admin_port)
                                     + ["--role", "shield"], SERVER_CPU)
        if not wait_port(self.shield_port, proc=self.shield):
            raise RuntimeError("outpostd shield did not start: "
                               + tail(self.env.path("outpost-shield.out")))
        self.proc = self.env.start(self.name, argv("edge", self.port, self.admin_port) + [
            "--shield", "http://127.0.0.1:%d" % self.shield_port], SERVER_CPU)
        if not wait_port(self.port, proc=self.proc):
            raise RuntimeError("outpostd edge did not start: "
                               + tail(self.env.path(self.name + ".out")))

    def stop(self):
        super().stop()
        if self.shield is not None:
            self.env.stop(self.shield)
            self.shield = None

    def server_pids(self):
        pids = super().server_pids()
        return pids + (tree(self.shield.pid) if self.shield is not None else [])


PEER_CLASSES = {c.name: c for c in (NginxCeiling, NginxStatic1k, NginxProxyCache, NginxProxyPass,
                                    Varnish, TrafficServer, Outpost, OutpostTiered)}


# ----------------------------------------------------------------------------------------
# load generators

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%.0f,"p99_us":%.0f,"err_connect":%d,"err_read":%d,"err_write":%d,' ..
    '"err_status":%d,"err_timeout":%d}\n', summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), e.connect, e.read, e.write, e.status,
    e.timeout))
end
"""

WRK_MISS = r"""
local counter = 0
local prefix = "x"
init = function(args) prefix = args[1] or "x" end
request = function()
  counter = counter + 1
  return wrk.format("GET", "/u/" .. prefix .. "-" .. counter)
end
"""


def write_lua(env):
    hit = env.path("hit.lua")
    miss = env.path("miss.lua")
    close = env.path("close.lua")
    with open(hit, "w") as f:
        f.write(WRK_DONE)
    with open(miss, "w") as f:
        f.write(WRK_MISS + WRK_DONE)
    with open(close, "w") as f:
        f.write('wrk.headers["Connection"] = "close"\n' + WRK_DONE)
    return {"h1": hit, "miss": miss, "tlsconn": close}


def run_client(argv, timeout):
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        r = subprocess.run(["taskset", "-c", CLIENT_CPU] + argv, capture_output=True, text=True,
                           timeout=timeout)
        out, rc = r.stdout + r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        out, rc = str(e), -1
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return out, rc, cpu


def wrk_round(lua, url, duration, conns, args=()):
    argv = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % duration, "--timeout", "5s", "-s", lua, url]
    if args:
        argv += ["--"] + list(args)
    out, rc, cpu = run_client(argv, duration + 30)
    m = re.search(r"BENCHJSON (\{.*\})", out)
    if rc != 0 or not m:
        raise RuntimeError("wrk failed (rc %d): %s" % (rc, out[-500:]))
    j = json.loads(m.group(1))
    secs = j["duration_us"] / 1e6
    errors = j["err_connect"] + j["err_read"] + j["err_write"] + j["err_status"] + j["err_timeout"]
    return {"requests": j["requests"], "seconds": secs, "rps": j["requests"] / secs,
            "mibps": j["bytes"] / secs / 1048576, "p50_ms": j["p50_us"] / 1000,
            "p99_ms": j["p99_us"] / 1000, "errors": errors, "client_cpu_s": cpu}


def h2load_round(env, url, duration, conns=32, streams=16):
    logf = env.path("h2load.log")
    if os.path.exists(logf):
        os.unlink(logf)
    argv = ["h2load", "-t1", "-c%d" % conns, "-m%d" % streams, "-D", str(duration),
            "--warm-up-time=1", "--log-file=" + logf, url]
    out, rc, cpu = run_client(argv, duration + 40)
    m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s, ([\d.]+)([KMG]?B)/s", out)
    m2 = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                   r"(\d+) failed, (\d+) errored", out)
    if rc != 0 or not m or not m2:
        raise RuntimeError("h2load failed (rc %d): %s" % (rc, out[-800:]))
    secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
    unit = {"B": 1, "KB": 1024, "MB": 1048576, "GB": 1073741824}[m.group(5)]
    lat = []
    with open(logf) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                lat.append(int(parts[2]))
    lat.sort()

    def pct(q):
        return lat[min(len(lat) - 1, int(q * len(lat)))] / 1000 if lat else 0.0

    done = int(m2.group(4))
    return {"requests": done, "seconds": secs, "rps": float(m.group(3)),
            "mibps": float(m.group(4)) * unit / 1048576, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "errors": int(m2.group(5)) + int(m2.group(6)), "client_cpu_s": cpu}


H3LOAD = os.environ.get("H3LOAD") or os.path.join(REPO, "build", "bench", "h3load")


def parse_h3load(out):
    """h3load's report as {line name: {field: number}} (bench/README.md)."""
    report = {}
    for line in out.splitlines():
        if line.startswith("finished in "):
            secs, rps, mbs = re.findall(r"[0-9]+(?:\.[0-9]+)?", line)
            report["finished"] = {"seconds": float(secs), "req/s": float(rps), "MB/s": float(mbs)}
            continue
        name, sep, rest = line.partition(": ")
        if sep:
            report[name] = {k.strip(): float(v)
                            for k, v in re.findall(r"([a-z0-9 ]+?) ([0-9]+(?:\.[0-9]+)?)", rest)}
    return report


def h3load_round(url, duration, conns=32, streams=16):
    """The HTTP/3 twin of h2load_round: same connections, streams and warm-up."""
    argv = [H3LOAD, "-t1", "-c%d" % conns, "-m%d" % streams, "-D", str(duration),
            "--warm-up-time", "1", url]
    out, rc, cpu = run_client(argv, duration + 40)
    rep = parse_h3load(out)
    if rc != 0 or "finished" not in rep or "requests" not in rep:
        raise RuntimeError("h3load failed (rc %d): %s" % (rc, out[-800:]))
    f, req, lat = rep["finished"], rep["requests"], rep.get("latency (ms)", {})
    return {"requests": int(req["succeeded"]), "seconds": f["seconds"], "rps": f["req/s"],
            "mibps": rep["traffic"]["body"] / f["seconds"] / 1048576 if f["seconds"] else 0.0,
            "p50_ms": lat.get("p50", 0.0), "p99_ms": lat.get("p99", 0.0),
            "errors": int(req["failed"] + req["errored"]), "client_cpu_s": cpu}


# ----------------------------------------------------------------------------------------
# warm-up and hit check

def get(port, path, tls=False):
    if tls:
        import ssl
        ctx = ssl._create_unverified_context()
        c = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=ctx)
    else:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        c.close()


def warm(peer, path):
    """Fetch path until the peer says it is a hit. Returns True/False, or None (no indicator)."""
    hit = None
    for _ in range(4):
        status, headers, body = get(peer.port, path)
        if status != 200:
            raise RuntimeError("%s %s: status %d" % (peer.name, path, status))
        hit = peer.is_hit(headers)
        if hit:
            return True
        time.sleep(0.05)
    return hit


# ----------------------------------------------------------------------------------------
# one measured round

def measure(args, env, origin, peer, row, lua, tag):
    kind, path = ROWS[row][0], ROWS[row][1]
    sampler = RssSampler(peer.server_pids)
    fetch0 = origin.fetches()
    before = cpu_snapshot(peer.server_pids())
    obefore = cpu_snapshot(tree(origin.proc.pid))
    busy0 = system_busy_s()
    sampler.start()
    try:
        if kind == "h1":
            r = wrk_round(lua["h1"], "http://127.0.0.1:%d%s" % (peer.port, path), args.duration,
                          args.connections)
        elif kind in ("miss", "tiered"):
            r = wrk_round(lua["miss"], "http://127.0.0.1:%d/" % peer.port, args.duration,
                          args.connections, (tag,))
        elif kind == "tlsconn":
            r = wrk_round(lua["tlsconn"], "https://127.0.0.1:%d%s" % (peer.tls_port, path),
                          args.duration, args.connections)
        elif kind == "h2":
            r = h2load_round(env, "https://127.0.0.1:%d%s" % (peer.tls_port, path),
                             args.duration)
        elif kind == "h3":
            r = h3load_round("https://127.0.0.1:%d%s" % (peer.tls_port, path), args.duration)
        else:
            raise RuntimeError(kind)
    finally:
        sampler.stop()
    after = cpu_snapshot(peer.server_pids())
    oafter = cpu_snapshot(tree(origin.proc.pid))
    busy = system_busy_s() - busy0
    time.sleep(0.05)
    fetches = origin.fetches() - fetch0
    cpu = cpu_seconds(before, after)
    r["server_cpu_s"] = cpu
    # h2load's measured window excludes its warm-up; CPU covers the whole run, so scale
    # requests per CPU-second by the requests the server did in the CPU window.
    warmed = kind in ("h2", "h3")
    total_secs = args.duration + (1 if warmed else 0)
    r["req_per_cpu_s"] = (r["rps"] * total_secs / cpu) if warmed and cpu > 0 else (
        r["requests"] / cpu if cpu > 0 else 0.0)
    r["server_cpu_util"] = cpu / total_secs
    r["client_cpu_util"] = r["client_cpu_s"] / total_secs
    r["origin_cpu_util"] = cpu_seconds(obefore, oafter) / total_secs
    # CPU used by anything else on the machine (other jobs, the bench's own sampling): a
    # high value means the numbers of this round are disturbed
    r["other_cpu_util"] = max(0.0, busy - cpu - r["client_cpu_s"]
                              - cpu_seconds(obefore, oafter)) / total_secs
    r["peak_rss_kib"] = sampler.peak_kb
    r["hwm_kib"] = sum(status_kb(p, "VmHWM") for p in peer.server_pids())
    r["origin_fetches"] = fetches
    r["origin_fetches_per_req"] = fetches / r["requests"] if r["requests"] else 0.0
    r.update(peer.extra_stats())
    if kind == "tiered":
        # latency without queueing: one connection, one request at a time, after the CPU and
        # origin accounting of the loaded run above
        lat = wrk_round(lua["miss"], "http://127.0.0.1:%d/" % peer.port,
                        max(2, args.duration // 3), 1, (tag + "-c1",))
        r["lat1_p50_ms"], r["lat1_p99_ms"] = lat["p50_ms"], lat["p99_ms"]
        r["errors"] += lat["errors"]
    return r


# ----------------------------------------------------------------------------------------
# summary

def med(vals):
    return statistics.median(vals) if vals else 0.0


def summarize(rounds):
    s = {}
    for k in ("rps", "p50_ms", "p99_ms", "mibps", "req_per_cpu_s", "server_cpu_util",
              "client_cpu_util", "origin_cpu_util", "other_cpu_util", "peak_rss_kib", "hwm_kib",
              "origin_fetches_per_req", "errors", "lmdb_resident_kib", "lat1_p50_ms",
              "lat1_p99_ms"):
        vals = [r[k] for r in rounds if k in r]
        if vals:
            s[k] = {"median": med(vals), "min": min(vals), "max": max(vals)}
    return s


def fmt_num(x, digits=0):
    if x >= 100000 and digits == 0:
        return "%.0fk" % (x / 1000)
    return ("%%.%df" % digits) % x


def fmt_spread(s, k, digits=0):
    if k not in s:
        return "-"
    v = s[k]
    if v["min"] == v["max"]:
        return fmt_num(v["median"], digits)
    return "%s (%s..%s)" % (fmt_num(v["median"], digits), fmt_num(v["min"], digits),
                            fmt_num(v["max"], digits))


def ratio(results, row, peer, ref, k):
    a = results.get(row, {}).get(peer, {}).get("summary", {}).get(k)
    b = results.get(row, {}).get(ref, {}).get("summary", {}).get(k)
    if not a or not b or not b["median"]:
        return "-"
    return "%.2fx" % (a["median"] / b["median"])


def table(results, rows, peers, meta):
    out = []
    out.append("Rounds: %d x %d s per row and peer, alternating peers; medians with (min..max). "
               "Server on CPU 0, load generator and origin on CPU 1." %
               (meta["rounds"], meta["duration"]))
    for skipped in meta.get("skipped", []):
        out.append("")
        out.append("SKIP peer " + skipped)
    out.append("")
    for row in rows:
        out.append("### %s: %s" % (row, ROWS[row][2]))
        out.append("")
        if row in NA_ROWS:
            out.append("n/a: " + NA_ROWS[row])
            out.append("")
            continue
        out.append("| peer | req/s | p50 ms | p99 ms | MiB/s | req/CPU-s | srv CPU | cli CPU "
                   "| other CPU | peak RSS MiB | origin fetch/req | req/s vs pc | req/CPU-s vs pc "
                   "| req/s vs ceiling |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for peer in peers:
            e = results.get(row, {}).get(peer)
            if e is None:
                continue
            if "na" in e:
                out.append("| %s | n/a: %s |" % (peer, e["na"]) + " |" * 12)
                continue
            s = e["summary"]
            rss = ({k: v / 1024 for k, v in s["peak_rss_kib"].items()}
                   if "peak_rss_kib" in s else None)
            out.append(("| %s |" + " %s |" * 13) % (
                peer, fmt_spread(s, "rps"), fmt_spread(s, "p50_ms", 2),
                fmt_spread(s, "p99_ms", 2), fmt_spread(s, "mibps", 0),
                fmt_spread(s, "req_per_cpu_s"),
                "%.0f%%" % (100 * s["server_cpu_util"]["median"]),
                "%.0f%%" % (100 * s["client_cpu_util"]["median"]),
                "%.0f%%" % (100 * s["other_cpu_util"]["median"]),
                fmt_spread({"r": rss}, "r", 1) if rss else "-",
                "%.3f" % s["origin_fetches_per_req"]["median"],
                ratio(results, row, peer, "nginx-proxy-cache", "rps"),
                ratio(results, row, peer, "nginx-proxy-cache", "req_per_cpu_s"),
                ratio(results, row, peer, "nginx-ceiling", "rps")))
            if e.get("notes"):
                out[-1] += " " + "; ".join(sorted(set(e["notes"])))
        out.append("")
        if ROWS[row][0] == "tiered":
            out.extend(tier_table(results, row, peers))
    out.append("### Targets (issues 3, 4, 5)")
    out.append("")
    out.extend(targets(results))
    return "\n".join(out) + "\n"


def tier_table(results, row, peers):
    """The tiered row per tier: throughput against nginx proxy_pass, and the latency each
    proxy tier adds over the origin alone (nginx-ceiling serves the origin's content), measured
    with one connection so that queueing does not count."""
    def m(peer, k):
        try:
            return results[row][peer]["summary"][k]["median"]
        except KeyError:
            return None

    base = m("nginx-ceiling", "lat1_p50_ms")
    ref_rps = m("nginx-proxy-pass", "rps")
    ref_tiers = PEER_CLASSES["nginx-proxy-pass"].tiers
    ref_add = (m("nginx-proxy-pass", "lat1_p50_ms") - base) / ref_tiers if (
        base is not None and m("nginx-proxy-pass", "lat1_p50_ms") is not None) else None
    out = ["Per tier (p50 with 1 connection; added = p50 - origin direct's p50, divided by the "
           "tiers; origin direct = nginx-ceiling%s):" % (
               ", p50 %.3f ms" % base if base is not None else ": not measured"), "",
           "| peer | tiers | req/s | req/s vs proxy_pass | p50 ms (1 conn) | p99 ms (1 conn) "
           "| added ms per tier | added per tier vs proxy_pass |",
           "|---|---|---|---|---|---|---|---|"]
    for peer in peers:
        tiers = PEER_CLASSES[peer].tiers
        rps, p50, p99 = m(peer, "rps"), m(peer, "lat1_p50_ms"), m(peer, "lat1_p99_ms")
        if tiers is None or rps is None:
            continue
        add = (p50 - base) / tiers if tiers and p50 is not None and base is not None else None
        out.append("| %s | %d | %.0f | %s | %s | %s | %s | %s |" % (
            peer, tiers, rps, "%.2fx" % (rps / ref_rps) if ref_rps else "-",
            "%.3f" % p50 if p50 is not None else "-", "%.3f" % p99 if p99 is not None else "-",
            "%.3f" % add if add is not None else "-",
            "%.2fx" % (add / ref_add) if add is not None and ref_add else "-"))
    out.append("")
    one, two = m("outpost", "lat1_p50_ms"), m("outpost-tiered", "lat1_p50_ms")
    r1, r2 = m("outpost", "rps"), m("outpost-tiered", "rps")
    if None not in (one, two, r1, r2) and r2:
        out.append("The shield tier (outpost-tiered over outpost, edge -> origin): %+.3f ms p50 "
                   "with 1 connection, req/s x%.2f on the same CPU.%s" % (
                       two - one, r2 / r1,
                       " nginx proxy_pass adds %.3f ms." % ref_add if ref_add is not None
                       else ""))
        out.append("")
    return out


def targets(results):
    def m(row, peer, k):
        try:
            return results[row][peer]["summary"][k]["median"]
        except KeyError:
            return None

    lines = []
    checks = [
        ("HTTP/1.1 1 KiB hits: req/CPU-s >= 1.5x nginx proxy_cache",
         "h1-1k", "req_per_cpu_s", "nginx-proxy-cache", 1.5),
        ("1 MiB hits: req/s >= Varnish", "h1-1m", "rps", "varnish", 1.0),
        ("miss path: req/s >= Traffic Server", "miss", "rps", "ats", 1.0),
        ("HTTP/2 over TLS 1 KiB hits: req/s >= 1.3x nginx proxy_cache",
         "h2-1k", "rps", "nginx-proxy-cache", 1.3),
    ]
    for text, row, k, ref, factor in checks:
        a, b = m(row, "outpost", k), m(row, ref, k)
        if a is None or b is None:
            why = results.get(row, {}).get("outpost", {}).get("na") or "not measured"
            lines.append("- %s: n/a (%s)" % (text, why if a is None else ref + " not measured"))
        else:
            lines.append("- %s: %s (%.0f vs %.0f, %.2fx)" % (
                text, "MET" if a >= factor * b else "NOT MET", a, b, a / b if b else 0))
    for size in ("1k", "128k"):
        a, b = m("h3-" + size, "outpost", "rps"), m("h2-" + size, "outpost", "rps")
        text = "HTTP/3 %s hits: req/s >= 0.6x the same node's HTTP/2" % size.replace("k", " KiB")
        if a is None or b is None:
            lines.append("- %s: n/a (h3-%s and h2-%s of outpost both needed)" % (text, size, size))
        else:
            lines.append("- %s: %s (%.0f vs %.0f, %.2fx)" % (
                text, "MET" if a >= 0.6 * b else "NOT MET", a, b, a / b if b else 0))
    a, b = m("h1-1k", "outpost", "peak_rss_kib"), m("h1-1k", "nginx-proxy-cache", "peak_rss_kib")
    lm = m("h1-1k", "outpost", "lmdb_resident_kib") or 0
    text = "peak RSS under 1 KiB hit load <= nginx proxy_cache's + LMDB resident pages"
    if a is None or b is None:
        lines.append("- %s: n/a (%s)" % (text, "outpost not measured" if a is None
                                         else "nginx-proxy-cache not measured"))
    else:
        lines.append("- %s: %s (%.1f MiB vs %.1f + %.1f MiB)" % (
            text, "MET" if a <= b + lm else "NOT MET", a / 1024, b / 1024, lm / 1024))
    return lines


# ----------------------------------------------------------------------------------------
# main

def parse_args(argv):
    ap = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rows and rounds, 3 s rounds")
    ap.add_argument("--smoke", action="store_true",
                    help="1 s per row, one round, one peer (--peer), no installs")
    ap.add_argument("--peer", help="one peer (same as --peers NAME)")
    ap.add_argument("--peers", help="comma-separated: " + ",".join(ALL_PEERS))
    ap.add_argument("--rows", help="comma-separated: " + ",".join(ALL_ROWS))
    ap.add_argument("--rounds", type=int, help="rounds per row (default 3, quick 2, smoke 1)")
    ap.add_argument("--duration", type=int, help="seconds per round (default 10, quick 3, "
                    "smoke 1)")
    ap.add_argument("--connections", type=int, default=64, help="wrk connections (default 64)")
    ap.add_argument("--json", default=os.path.join(HERE, "results", "latest.json"))
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    ap.add_argument("--no-install", action="store_true", help="(handled by bench/run)")
    a = ap.parse_args(argv)
    if a.peer:
        a.peers = a.peer
    if a.smoke:
        if not a.peers:
            ap.error("--smoke needs --peer NAME")
        a.rounds = a.rounds or 1
        a.duration = a.duration or 1
    elif a.quick:
        a.rounds = a.rounds or 2
        a.duration = a.duration or 3
    a.rounds = a.rounds or 3
    a.duration = a.duration or 10
    a.peer_list = a.peers.split(",") if a.peers else list(ALL_PEERS)
    for p in a.peer_list:
        if p not in PEER_CLASSES:
            ap.error("unknown peer %s (known: %s)" % (p, ", ".join(ALL_PEERS)))
    if a.rows:
        a.row_list = a.rows.split(",")
    else:
        a.row_list = QUICK_ROWS if a.quick else ALL_ROWS
    for r in a.row_list:
        if r not in ROWS:
            ap.error("unknown row %s (known: %s)" % (r, ", ".join(ALL_ROWS)))
    return a


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": os.uname().release}


def versions():
    v = {}
    for name, argv in [("nginx", ["nginx", "-v"]), ("varnish", ["varnishd", "-V"]),
                       ("ats", ["traffic_server", "-V"]), ("wrk", ["wrk", "-v"]),
                       ("h2load", ["h2load", "--version"])]:
        if shutil.which(argv[0]):
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
                v[name] = ((r.stdout + r.stderr).strip().splitlines() or ["?"])[-1 if name ==
                                                                                "ats" else 0]
            except Exception:
                pass
    return v


def main(argv):
    args = parse_args(argv)
    if not shutil.which("nginx") or not shutil.which("wrk"):
        log("bench: nginx and wrk are required (origin and load generator)")
        return 2
    env = Env(keep=args.keep)

    def on_signal(sig, frame):
        raise KeyboardInterrupt("signal %d" % sig)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)
    results = {}
    started = datetime.datetime.now(datetime.timezone.utc)
    meta = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "versions": versions(), "command": " ".join(["bench/run"] + argv),
            "rounds": args.rounds, "duration": args.duration, "connections": args.connections,
            "peers": args.peer_list, "rows": args.row_list}
    rc = 0
    try:
        env.make_cert()
        lua = write_lua(env)
        origin = Origin(env)
        log("origin: nginx on 127.0.0.1:%d (CPU %s), files %s" % (
            origin.port, CLIENT_CPU, ", ".join(SIZES)))
        peers = []
        for name in args.peer_list:
            p = PEER_CLASSES[name](env, origin)
            why = p.available()
            if why:
                log("SKIP peer %s: %s" % (name, why))
                meta.setdefault("skipped", []).append("%s (%s)" % (name, why))
                for row in args.row_list:
                    results.setdefault(row, {})[name] = {"na": "skipped: " + why}
                continue
            try:
                p.start()
            except Exception as e:
                log("SKIP peer %s: failed to start: %s" % (name, e))
                meta.setdefault("skipped", []).append("%s (failed to start)" % name)
                p.stop()
                for row in args.row_list:
                    results.setdefault(row, {})[name] = {"na": "failed to start"}
                continue
            log("peer %s: pid %d, http 127.0.0.1:%d%s" % (
                name, p.proc.pid, p.port, ", tls %d" % p.tls_port if p.tls else ""))
            peers.append(p)
        if not peers:
            log("bench: no peer could run")
            return 1
        if not os.access(H3LOAD, os.X_OK):
            for row in args.row_list:
                if ROWS[row][0] == "h3":
                    NA_ROWS.setdefault(row, "%s not built (make h3load)" %
                                       os.path.relpath(H3LOAD, REPO))
        if not shutil.which("h2load"):
            for row in args.row_list:
                if ROWS[row][0] == "h2":
                    NA_ROWS.setdefault(row, "h2load (nghttp2-client) not installed")
        t_start = time.time()
        for row in args.row_list:
            kind = ROWS[row][0]
            res = results.setdefault(row, {})
            if row in NA_ROWS:
                log("row %s: n/a (%s)" % (row, NA_ROWS[row]))
                continue
            active = []
            for p in peers:
                why = p.row_na(row)
                if kind == "miss" and not p.caches and p.name != "nginx-ceiling":
                    why = "no cache and no origin content"
                if why:
                    res[p.name] = {"na": why}
                else:
                    active.append(p)
                    res[p.name] = {"rounds": [], "notes": []}
            for rnd in range(args.rounds):
                order = active[rnd % len(active):] + active[:rnd % len(active)] if active else []
                for p in order:
                    e = res[p.name]
                    if kind not in ("miss", "tiered"):
                        hit = warm(p, ROWS[row][1])
                        if p.caches and hit is False:
                            e["notes"].append("warm hit NOT confirmed")
                            log("WARNING %s %s: no hit after warming" % (p.name, ROWS[row][1]))
                    tag = "%s-%d-%d" % (p.name, rnd, int(time.time() * 1000))
                    try:
                        r = measure(args, env, origin, p, row, lua, tag)
                    except Exception as ex:
                        log("ERROR %s %s round %d: %s" % (row, p.name, rnd + 1, ex))
                        e["notes"].append("a round failed")
                        continue
                    if r["errors"]:
                        e["notes"].append("errors: %d" % r["errors"])
                    if kind not in ("miss", "tiered") and p.caches and r["origin_fetches"] > 0:
                        e["notes"].append("origin fetches during hit round")
                    e["rounds"].append(r)
                    log("%-8s %-18s round %d: %8.0f req/s  p99 %6.2f ms  %8.0f req/CPU-s  "
                        "srv %3.0f%% cli %3.0f%%  rss %.1f MiB  origin/req %.3f" % (
                            row, p.name, rnd + 1, r["rps"], r["p99_ms"], r["req_per_cpu_s"],
                            100 * r["server_cpu_util"], 100 * r["client_cpu_util"],
                            r["peak_rss_kib"] / 1024, r["origin_fetches_per_req"]))
            for p in active:
                e = res[p.name]
                if e["rounds"]:
                    e["summary"] = summarize(e["rounds"])
                else:
                    res[p.name] = {"na": "every round failed"}
        meta["elapsed_s"] = round(time.time() - t_start)
        md = table(results, args.row_list, args.peer_list, meta)
        print("## Outpost bench, %s\n" % meta["date"])
        print("Machine: %d CPUs, %s. Command: `%s`\n" % (
            meta["machine"]["nproc"], meta["machine"]["cpu"], meta["command"]))
        print(md, flush=True)
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": results, "na_rows": NA_ROWS, "markdown": md}, f,
                      indent=1)
        log("wrote %s" % args.json)
        measured = any("summary" in e for r in results.values() for e in r.values())
        rc = 0 if measured else 1
    except KeyboardInterrupt as e:
        log("bench: interrupted (%s), cleaning up" % e)
        rc = 130
    except Exception as e:
        log("bench: error: %s" % e)
        rc = 1
    finally:
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        env.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
