#!/usr/bin/env python3
"""Scale benchmark: a data directory of N small cached objects, written directly in the
layout artifactapi uses (SPEC §7: DATA/objects/KEY and DATA/meta/KEY;meta.json), then
start-up to the first /health 200, the time until the background count is done, RSS, and
random-key hits per second against nginx proxy_cache over the same N objects (its cache filled
through requests). Run by scripts/bench-scale; knobs are environment variables described there."""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN, OUT = sys.argv[1], sys.argv[2]
COMMIT = sys.argv[3] if len(sys.argv) > 3 else "unknown"
N = int(os.environ.get("BENCH_SCALE_OBJECTS", "1000000"))
SIZE = int(os.environ.get("BENCH_SCALE_SIZE", "1024"))
SECONDS = int(os.environ.get("BENCH_SCALE_WRK_SECONDS", "10"))
CONNS = [int(c) for c in os.environ.get("BENCH_SCALE_CONNECTIONS", "8,64").split(",")]
STARTS = int(os.environ.get("BENCH_SCALE_STARTS", "3"))
PER_DIR = 1000
PROCS = []


def log(msg):
    print(f"[bench-scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rel(i):
    return f"d{i // PER_DIR:04}/o{i:07}.bin"


def generate(data):
    """N objects of SIZE bytes, each with its record, as a fill would have left them."""
    objects, meta = os.path.join(data, "objects", "gen"), os.path.join(data, "meta", "gen")
    now = int(time.time() * 1000)
    pad = os.urandom(SIZE)
    for d in range((N + PER_DIR - 1) // PER_DIR):
        os.makedirs(os.path.join(objects, f"d{d:04}"), exist_ok=True)
        os.makedirs(os.path.join(meta, f"d{d:04}"), exist_ok=True)
    for i in range(N):
        body = (f"{i:016}".encode() + pad)[:SIZE]
        with open(os.path.join(objects, rel(i)), "wb") as f:
            f.write(body)
        record = {
            "size": SIZE,
            "sha256": hashlib.sha256(body).hexdigest(),
            "content_type": "application/octet-stream",
            "fetched_at_ms": now,
            "class": "file",
        }
        with open(os.path.join(meta, rel(i) + ";meta.json"), "w") as f:
            json.dump(record, f, separators=(",", ":"))
        if i and i % 200000 == 0:
            log(f"  {i} objects written")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def health_ok(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=0.2)
    except OSError:
        return False
    with s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return s.recv(64).startswith(b"HTTP/1.1 200")


def start_artifactapi(work, data, origin_port):
    port = free_port()
    conf = os.path.join(work, "artifactapi.yaml")
    with open(conf, "w") as f:
        f.write(
            f"storage:\n  path: {data}\nremotes:\n  gen:\n    type: remote\n    package: generic\n"
            f"    base_url: http://127.0.0.1:{origin_port}\n"
        )
    log_path = os.path.join(work, "artifactapi.log")
    out = open(log_path, "w")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [BIN, "--config", conf, "serve", "--listen", f"127.0.0.1:{port}"],
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, "RUST_LOG": "info"},
    )
    PROCS.append(proc)
    while not health_ok(port):
        if proc.poll() is not None or time.monotonic() - t0 > 60:
            raise SystemExit(f"artifactapi did not become healthy; see {log_path}")
        time.sleep(0.002)
    first_200 = time.monotonic() - t0
    counted = None
    while counted is None and time.monotonic() - t0 < 600:
        with open(log_path) as f:
            m = re.search(r"cache usage ready.*?ms=(\d+)", f.read())
        if m:
            counted = int(m.group(1)) / 1000
        else:
            time.sleep(0.1)
    return proc, port, first_200, counted


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in PROCS:
        PROCS.remove(proc)


def nginx(dir, body, port):
    os.makedirs(dir, exist_ok=True)
    conf = os.path.join(dir, "nginx.conf")
    user = "user root;\n" if os.geteuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(
            f"{user}worker_processes 1;\ndaemon off;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\n"
            f"worker_rlimit_nofile 65536;\nevents {{ worker_connections 4096; }}\n"
            f"http {{ access_log off; sendfile on; client_body_temp_path {dir}/b; proxy_temp_path {dir}/p;"
            f" fastcgi_temp_path {dir}/f; uwsgi_temp_path {dir}/u; scgi_temp_path {dir}/s;\n{body}\n}}\n"
        )
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PROCS.append(proc)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise SystemExit("nginx did not start")


def wrk(port, prefix, conns, seconds, mode, work):
    """Requests/s of wrk over the N keys: `random` picks each key at random, `sweep` walks them
    in order (each thread its share), to fill a cache."""
    script = os.path.join(work, f"{mode}.lua")
    with open(script, "w") as f:
        f.write(
            f"""
local n, prefix, per_dir = {N}, "{prefix}", {PER_DIR}
local threads = {{}}
function setup(thread) thread:set("id", #threads); table.insert(threads, thread) end
function init(args) at = id or 0; math.randomseed(os.time() + at) end
function path(i) return string.format("%sd%04d/o%07d.bin", prefix, math.floor(i / per_dir), i) end
function request()
  local i
  if "{mode}" == "random" then i = math.random(0, n - 1) else i = at % n; at = at + 2 end
  return wrk.format("GET", path(i))
end
"""
        )
    threads = "2" if mode == "sweep" else "1"
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "-s", script, f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True,
    ).stdout
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if not m:
        raise SystemExit(f"no Requests/sec in wrk output:\n{out}")
    return float(m.group(1))


def count_files(path):
    return sum(len(files) for _, _, files in os.walk(path))


def main():
    base = os.environ.get("BENCH_SCALE_DIR") or os.path.join(os.getcwd(), "target")
    os.makedirs(base, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-scale.", dir=base)
    st = os.statvfs(work)
    need_bytes, need_inodes = N * 3 * 8192 + (1 << 30), N * 3 + 100000
    if st.f_bavail * st.f_frsize < need_bytes or st.f_favail < need_inodes:
        raise SystemExit(f"{work}: needs {need_bytes >> 20} MiB and {need_inodes} inodes free")
    data = os.path.join(work, "data")
    try:
        t0 = time.monotonic()
        generate(data)
        log(f"{N} objects of {SIZE} bytes written in {time.monotonic() - t0:.0f}s")
        # The origin serves the same object files nginx's cache is then filled from.
        origin_port = free_port()
        origin = nginx(
            os.path.join(work, "origin"),
            f"server {{ listen 127.0.0.1:{origin_port}; root {data}/objects/gen; location / {{ }} }}",
            origin_port,
        )
        starts, counts = [], []
        for k in range(STARTS):
            proc, port, first, counted = start_artifactapi(work, data, origin_port)
            starts.append(first)
            counts.append(counted)
            if k < STARTS - 1:
                stop(proc)
        rss_counted = rss_kib(proc.pid)
        log(f"start-up to /health 200: {starts}; count done after {counts} s; RSS {rss_counted} KiB")
        # nginx proxy_cache over the same objects, filled by requesting each once.
        cache_port = free_port()
        cache_dir = os.path.join(work, "nginx-cache")
        os.makedirs(cache_dir)
        ngx = nginx(
            os.path.join(work, "nginx"),
            f"proxy_cache_path {cache_dir} levels=1:2 keys_zone=c:256m inactive=7d use_temp_path=off;\n"
            f"server {{ listen 127.0.0.1:{cache_port}; location / {{ proxy_pass http://127.0.0.1:{origin_port};"
            f" proxy_cache c; proxy_cache_valid 200 7d; add_header X-Cache $upstream_cache_status always; }} }}",
            cache_port,
        )
        t0 = time.monotonic()
        while count_files(cache_dir) < N:
            wrk(cache_port, "/", 32, max(10, N // 4000), "sweep", work)
            if time.monotonic() - t0 > 900:
                raise SystemExit(f"nginx's cache holds {count_files(cache_dir)} of {N} after 15 min")
        log(f"nginx cache filled in {time.monotonic() - t0:.0f}s")
        # Both answer from their caches, not from the origin.
        import http.client
        import random

        for p, prefix in ((port, "/api/v1/remote/gen/"), (cache_port, "/")):
            c = http.client.HTTPConnection("127.0.0.1", p, timeout=10)
            for i in random.sample(range(N), 3):
                c.request("GET", prefix + rel(i))
                r = c.getresponse()
                body = r.read()
                if r.status != 200 or len(body) != SIZE or r.getheader("X-Cache") != "HIT":
                    raise SystemExit(f"port {p}: {rel(i)} is {r.status} {r.getheader('X-Cache')}, not a hit")
        rows = []
        for conns in CONNS:
            a = wrk(port, "/api/v1/remote/gen/", conns, SECONDS, "random", work)
            n = wrk(cache_port, "/", conns, SECONDS, "random", work)
            rows.append({"connections": conns, "artifactapi": a, "nginx": n})
            log(f"{conns} connections: artifactapi {a:.0f} req/s, nginx {n:.0f} req/s")
        rss_loaded = rss_kib(proc.pid)
        stop(proc)
        stop(ngx)
        stop(origin)
        report(starts, counts, rss_counted, rss_loaded, rows)
    finally:
        for p in list(PROCS):
            stop(p)
        if os.environ.get("BENCH_SCALE_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


def report(starts, counts, rss_counted, rss_loaded, rows):
    os.makedirs(OUT, exist_ok=True)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    starts_sorted = sorted(starts)
    median = starts_sorted[len(starts_sorted) // 2]
    result = {
        "commit": COMMIT, "date": when, "objects": N, "size": SIZE,
        "startup_to_health_s": starts, "count_done_s": counts,
        "rss_kib_after_count": rss_counted, "rss_kib_after_load": rss_loaded, "hits": rows,
    }
    with open(os.path.join(OUT, "scale.json"), "w") as f:
        json.dump(result, f, indent=2)
    lines = [
        f"## artifactapi scale benchmark ({COMMIT}, {when})",
        "",
        f"{N:,} cached objects of {SIZE} bytes on the embedded default (filesystem storage and "
        "records), written in artifactapi's layout; nginx `proxy_cache` over the same objects, "
        "filled through requests. Targets: start-up under 1 s, RSS under 200 MiB, random-key "
        "hits at least nginx's.",
        "",
        f"- start-up to the first `/health` 200: median {median * 1000:.0f} ms of {len(starts)}"
        f" (max {max(starts) * 1000:.0f} ms)",
        f"- background count done (eviction on) after: {', '.join(f'{c:.1f} s' for c in counts if c is not None)}",
        f"- RSS: {rss_counted / 1024:.0f} MiB once counted, {rss_loaded / 1024:.0f} MiB after the random-key runs",
        "",
        "| connections | artifactapi req/s | nginx req/s | ratio |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['connections']} | {r['artifactapi']:.0f} | {r['nginx']:.0f} "
            f"| **{r['artifactapi'] / max(r['nginx'], 1e-9):.2f}x** |"
        )
    lines.append("")
    with open(os.path.join(OUT, "scale.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
