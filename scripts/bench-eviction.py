#!/usr/bin/env python3
"""Eviction benchmark: replays one Zipf request trace against artifactapi and against nginx
proxy_cache with the same max_size, both in front of one nginx origin, and reports object hit
ratio, byte hit ratio, upstream bytes and disk use against the limit for both, then hits per
second on one small object while eviction runs at full speed. Run by scripts/bench-eviction,
which passes the binary and the output directory; every knob is an environment variable
described there."""

import http.client
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1]
OUT = sys.argv[2]
COMMIT = sys.argv[3] if len(sys.argv) > 3 else "unknown"
OBJECTS = int(os.environ.get("BENCH_EVICTION_OBJECTS", "3000"))
REQUESTS = int(os.environ.get("BENCH_EVICTION_REQUESTS", "12000"))
ALPHAS = [float(a) for a in os.environ.get("BENCH_EVICTION_ALPHAS", "0.8,1.0").split(",")]
FRACTIONS = [float(f) for f in os.environ.get("BENCH_EVICTION_FRACTIONS", "0.1,0.3").split(",")]
SEED = int(os.environ.get("BENCH_EVICTION_SEED", "17"))
WRK_SECONDS = int(os.environ.get("BENCH_EVICTION_WRK_SECONDS", "5"))
MIN_SIZE, MAX_SIZE = 4 * 1024, 64 * 1024 * 1024

PROCS = []


def log(msg):
    print(f"[bench-eviction {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on {port} within {timeout}s")


def start(cmd, port, what, log_path):
    out = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    PROCS.append(proc)
    wait_port(port, proc, what)
    return proc


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc in PROCS:
        PROCS.remove(proc)


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def sizes(rng):
    """Most small, a few very large: 98% log-uniform from 4 KiB to 1 MiB, 2% from 1 to 64 MiB."""

    def log_uniform(lo, hi):
        return int(lo * math.exp(math.log(hi / lo) * rng.random()))

    return [
        log_uniform(1 << 20, MAX_SIZE) if rng.random() < 0.02 else log_uniform(MIN_SIZE, 1 << 20)
        for _ in range(OBJECTS)
    ]


def zipf_trace(rng, alpha, n):
    weights = [1.0 / (i + 1) ** alpha for i in range(OBJECTS)]
    # A random popularity order, so that size and rank are independent.
    order = list(range(OBJECTS))
    rng.shuffle(order)
    ranks = rng.choices(range(OBJECTS), weights=weights, k=n)
    return [order[r] for r in ranks]


def make_origin(root, object_sizes):
    os.makedirs(root, exist_ok=True)
    block = os.urandom(1024 * 1024)
    for i, size in enumerate(object_sizes):
        with open(os.path.join(root, f"o{i:05}.bin"), "wb") as f:
            left = size
            while left > 0:
                f.write(block[: min(left, len(block))])
                left -= len(block)


NGINX_COMMON = """{user}worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  sendfile on;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy_temp;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  {body}
}}
"""


def nginx(dir, body, port, what):
    os.makedirs(dir, exist_ok=True)
    conf = os.path.join(dir, "nginx.conf")
    with open(conf, "w") as f:
        # As root, nginx's workers would run as nobody and could not write the cache.
        user = "user root;\n" if os.geteuid() == 0 else ""
        f.write(NGINX_COMMON.format(user=user, dir=dir, body=body))
    return start(["nginx", "-c", conf, "-p", dir], port, what, os.path.join(dir, "out.log"))


def start_origin(work, root):
    port = free_port()
    body = f"server {{ listen 127.0.0.1:{port}; root {root}; location / {{ }} }}"
    return nginx(os.path.join(work, "origin"), body, port, "origin nginx"), port


def start_nginx_cache(work, origin, max_size):
    port = free_port()
    cache = os.path.join(work, "nginx-cache")
    os.makedirs(cache, exist_ok=True)
    body = (
        f"proxy_cache_path {cache} levels=1:2 keys_zone=c:32m max_size={max_size} "
        f"inactive=7d use_temp_path=off;\n"
        f"  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://127.0.0.1:{origin};"
        f" proxy_cache c; proxy_cache_valid 200 7d; proxy_buffering on;"
        f" add_header X-Cache $upstream_cache_status always; }} }}"
    )
    proc = nginx(os.path.join(work, "nginx"), body, port, "nginx proxy_cache")
    return proc, port, cache, lambda i: f"/o{i:05}.bin"


def start_artifactapi(work, origin, max_size):
    port = free_port()
    data = os.path.join(work, "artifactapi-data")
    conf = os.path.join(work, "artifactapi.yaml")
    with open(conf, "w") as f:
        f.write(
            f"storage:\n  path: {data}\n  max_size: {max_size}\n  min_free: 0\n"
            f"remotes:\n  gen:\n    type: remote\n    package: generic\n"
            f"    base_url: http://127.0.0.1:{origin}\n"
        )
    proc = start(
        [BIN, "--config", conf, "serve", "--listen", f"127.0.0.1:{port}"],
        port,
        "artifactapi",
        os.path.join(work, "artifactapi.log"),
    )
    return proc, port, data, lambda i: f"/api/v1/remote/gen/o{i:05}.bin"


def get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    n = 0
    while True:
        chunk = r.read(1 << 20)
        if not chunk:
            break
        n += len(chunk)
    if r.status != 200:
        raise SystemExit(f"GET {path}: {r.status}")
    return r.getheader("X-Cache", ""), n


class Sampler(threading.Thread):
    """Disk use of a cache directory, every half second."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.samples, self.done = path, [], threading.Event()

    def run(self):
        while not self.done.is_set():
            self.samples.append(dir_bytes(self.path))
            self.done.wait(0.5)

    def finish(self):
        self.done.set()
        self.join()
        self.samples.append(dir_bytes(self.path))
        return sum(self.samples) / len(self.samples), max(self.samples)


def lru_at_limit(trace, object_sizes, max_size):
    """Object and byte hit ratios of exact LRU holding max_size at every moment: what nginx
    proxy_cache's policy would give if it held its limit. Objects larger than the limit are
    never kept."""
    from collections import OrderedDict

    held, used = OrderedDict(), 0
    hits = hit_bytes = total = 0
    for i in trace:
        size = object_sizes[i]
        total += size
        if i in held:
            held.move_to_end(i)
            hits += 1
            hit_bytes += size
            continue
        if size > max_size:
            continue
        while used + size > max_size:
            _, s = held.popitem(last=False)
            used -= s
        held[i] = size
        used += size
    return {"object_hit_ratio": hits / len(trace), "byte_hit_ratio": hit_bytes / total}


def replay(starter, work, origin, max_size, trace, object_sizes):
    proc, port, cache_dir, path_of = starter(work, origin, max_size)
    try:
        sampler = Sampler(cache_dir)
        sampler.start()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        hits = hit_bytes = upstream = total_bytes = 0
        for i in trace:
            cache, n = get(conn, path_of(i))
            if n != object_sizes[i]:
                raise SystemExit(f"object {i}: {n} bytes, expected {object_sizes[i]}")
            total_bytes += n
            if cache == "HIT":
                hits += 1
                hit_bytes += n
            else:
                upstream += n
        mean, peak = sampler.finish()
        return {
            "object_hit_ratio": hits / len(trace),
            "byte_hit_ratio": hit_bytes / total_bytes,
            "upstream_bytes": upstream,
            "disk_mean_over_limit": mean / max_size,
            "disk_peak_over_limit": peak / max_size,
        }
    finally:
        stop(proc)
        shutil.rmtree(cache_dir, ignore_errors=True)


def wrk_rps(url):
    out = subprocess.run(
        ["wrk", "-t1", "-c8", f"-d{WRK_SECONDS}s", url], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise SystemExit(f"no Requests/sec in wrk output:\n{out}")


def hits_during_eviction(starter, work, origin, object_sizes):
    """Hits/s on one small object while another client streams distinct large misses that
    make every fill evict."""
    small = min(range(OBJECTS), key=lambda i: object_sizes[i])
    large = sorted(range(OBJECTS), key=lambda i: -object_sizes[i])[:200]
    max_size = sum(object_sizes[i] for i in large[:20]) // 2
    proc, port, cache_dir, path_of = starter(work, origin, max_size)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for _ in range(3):
            get(conn, path_of(small))
        stop_flag = threading.Event()
        evicting = {"requests": 0}

        def churn():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            k = 0
            while not stop_flag.is_set():
                get(c, path_of(large[k % len(large)]))
                evicting["requests"] += 1
                k += 1

        t = threading.Thread(target=churn, daemon=True)
        t.start()
        time.sleep(1)
        rps = wrk_rps(f"http://127.0.0.1:{port}{path_of(small)}")
        stop_flag.set()
        t.join()
        cache, _ = get(conn, path_of(small))
        return {"hits_per_s": rps, "misses_meanwhile": evicting["requests"], "last": cache}
    finally:
        stop(proc)
        shutil.rmtree(cache_dir, ignore_errors=True)


def main():
    base = os.environ.get("BENCH_EVICTION_DIR") or os.path.join(os.getcwd(), "target")
    os.makedirs(base, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-eviction.", dir=base)
    rng = random.Random(SEED)
    object_sizes = sizes(rng)
    total = sum(object_sizes)
    need = total * 2 + (2 << 30)
    free = shutil.disk_usage(work).free
    if free < need:
        raise SystemExit(f"{work}: {free >> 20} MiB free, need {need >> 20} MiB")
    try:
        log(f"{OBJECTS} objects, {total / 2**30:.2f} GiB, {REQUESTS} requests per cell")
        make_origin(os.path.join(work, "origin-root"), object_sizes)
        origin_proc, origin = start_origin(work, os.path.join(work, "origin-root"))
        cells = []
        for alpha in ALPHAS:
            trace = zipf_trace(random.Random(SEED + int(alpha * 100)), alpha, REQUESTS)
            for frac in FRACTIONS:
                max_size = int(total * frac)
                row = {"alpha": alpha, "fraction": frac, "max_size": max_size}
                for name, starter in (("artifactapi", start_artifactapi), ("nginx", start_nginx_cache)):
                    t0 = time.time()
                    row[name] = replay(starter, work, origin, max_size, trace, object_sizes)
                    log(f"α={alpha} {frac:.0%} {name}: {row[name]} ({time.time() - t0:.0f}s)")
                row["lru_at_limit"] = lru_at_limit(trace, object_sizes, max_size)
                cells.append(row)
        during = {}
        for name, starter in (("artifactapi", start_artifactapi), ("nginx", start_nginx_cache)):
            during[name] = hits_during_eviction(starter, work, origin, object_sizes)
            log(f"hits during eviction, {name}: {during[name]}")
        stop(origin_proc)
        report(cells, during, total)
    finally:
        for p in list(PROCS):
            stop(p)
        shutil.rmtree(work, ignore_errors=True)


def report(cells, during, total):
    os.makedirs(OUT, exist_ok=True)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result = {
        "commit": COMMIT,
        "date": when,
        "objects": OBJECTS,
        "total_bytes": total,
        "requests_per_cell": REQUESTS,
        "cells": cells,
        "hits_during_eviction": during,
    }
    with open(os.path.join(OUT, "eviction.json"), "w") as f:
        json.dump(result, f, indent=2)
    a, n = during["artifactapi"], during["nginx"]
    lines = [
        f"## artifactapi eviction benchmark ({COMMIT}, {when})",
        "",
        f"One Zipf trace per α, {REQUESTS} sequential requests over {OBJECTS} objects of 4 KiB to "
        f"64 MiB (most small; {total / 2**30:.2f} GiB in all), replayed against artifactapi and "
        "nginx `proxy_cache` with the same `max_size`, both empty at the start, in front of one "
        "nginx origin. Ratios are artifactapi / nginx: at least 1.0 in every cell is the target, "
        "and at least 1.1 for object hits at 10%. Disk is the cache directory's bytes, sampled "
        "twice a second, over `max_size`.",
        "",
        "| α | cache | object hits a / n | ratio | byte hits a / n | ratio | upstream GiB a / n | disk mean a / n | disk peak a / n | a / LRU at the limit: objects, bytes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        x, y, l = c["artifactapi"], c["nginx"], c["lru_at_limit"]
        lines.append(
            f"| {c['alpha']} | {c['fraction']:.0%} "
            f"| {x['object_hit_ratio']:.3f} / {y['object_hit_ratio']:.3f} "
            f"| **{x['object_hit_ratio'] / max(y['object_hit_ratio'], 1e-9):.2f}x** "
            f"| {x['byte_hit_ratio']:.3f} / {y['byte_hit_ratio']:.3f} "
            f"| **{x['byte_hit_ratio'] / max(y['byte_hit_ratio'], 1e-9):.2f}x** "
            f"| {x['upstream_bytes'] / 2**30:.2f} / {y['upstream_bytes'] / 2**30:.2f} "
            f"| {x['disk_mean_over_limit']:.2f} / {y['disk_mean_over_limit']:.2f} "
            f"| {x['disk_peak_over_limit']:.2f} / {y['disk_peak_over_limit']:.2f} "
            f"| {x['object_hit_ratio'] / max(l['object_hit_ratio'], 1e-9):.2f}x, "
            f"{x['byte_hit_ratio'] / max(l['byte_hit_ratio'], 1e-9):.2f}x |"
        )
    lines += [
        "",
        "nginx's cache manager checks the limit only every few seconds (10 s once it found the "
        "cache under it), so within a replay nginx holds far more than `max_size`: its hit "
        "ratios are those of a larger cache. The last column compares artifactapi with exact "
        "LRU (nginx's policy) holding the same limit at every moment, computed on the same "
        "trace.",
        "",
        f"Hits on one small object (wrk, 8 connections, {WRK_SECONDS} s) while another client "
        "streams distinct large misses that make every fill evict: artifactapi "
        f"{a['hits_per_s']:.0f} req/s ({a['misses_meanwhile']} misses meanwhile), nginx "
        f"{n['hits_per_s']:.0f} req/s ({n['misses_meanwhile']} misses meanwhile): "
        f"**{a['hits_per_s'] / max(n['hits_per_s'], 1e-9):.2f}x**.",
        "",
    ]
    with open(os.path.join(OUT, "eviction.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
