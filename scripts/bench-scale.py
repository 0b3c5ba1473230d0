#!/usr/bin/env python3
"""Scale benchmark: N small cached objects of one generic remote on the embedded default
(filesystem storage and records, SPEC §7), then start-up to the first /health 200, the time
until the background count is done, RSS, and random-key hits per second against nginx
proxy_cache over the same N objects (its cache filled through requests).

The objects are not fetched one by one: a few are filled through real requests first, and the
rest are written in the layout and with the records those fills left (checked field by field,
byte by byte). Run by scripts/bench-scale; the knobs are environment variables described there.
"""

import email.utils
import hashlib
import http.client
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BIN, OUT = sys.argv[1], sys.argv[2]
COMMIT = sys.argv[3] if len(sys.argv) > 3 else "unknown"
N = int(os.environ.get("BENCH_SCALE_OBJECTS", "1000000"))
SIZE = int(os.environ.get("BENCH_SCALE_SIZE", "1024"))
SECONDS = int(os.environ.get("BENCH_SCALE_WRK_SECONDS", "10"))
CONNS = [int(c) for c in os.environ.get("BENCH_SCALE_CONNECTIONS", "8,64").split(",") if c]
STARTS = int(os.environ.get("BENCH_SCALE_STARTS", "3"))
JOBS = int(os.environ.get("BENCH_SCALE_JOBS", "2"))
KEEP = os.environ.get("BENCH_SCALE_KEEP") == "1"
WRK_THREADS = 2
PER_DIR = 1000
REMOTE = "gen"
API_PREFIX = f"/api/v1/remote/{REMOTE}/"
LAYOUT = 1  # bump when the generated data changes, so kept data dirs are not reused
PROCS = []  # every process started and not yet stopped
T_START = time.monotonic()


def log(msg):
    print(f"[bench-scale {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"FAILED: {msg}")
    raise SystemExit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rel(i):
    return f"d{i // PER_DIR:04}/o{i:07}.bin"


# --- generating objects and records -----------------------------------------------------------
def body_of(i, pad):
    return (f"{i:016}".encode() + pad)[:SIZE]


def record_of(template, body, st_mtime, now_ms):
    """The record a fill of BODY from the origin nginx leaves, shaped like TEMPLATE (a record a
    real fill wrote): same fields in the same order."""
    rec = {}
    for k, v in template.items():
        if k == "size":
            v = len(body)
        elif k == "sha256":
            v = hashlib.sha256(body).hexdigest()
        elif k == "etag":  # nginx's: "{mtime:x}-{size:x}"
            v = f'"{int(st_mtime):x}-{len(body):x}"'
        elif k == "last_modified":
            v = email.utils.formatdate(int(st_mtime), usegmt=True)
        elif k == "fetched_at_ms":
            v = now_ms
        elif k == "expires_at_ms":
            v = now_ms + (template["expires_at_ms"] - template["fetched_at_ms"])
        rec[k] = v
    return json.dumps(rec, separators=(",", ":")).encode()


def write_range(args):
    """Worker: objects [lo, hi) under OBJECTS with their records under META."""
    objects, meta, template, lo, hi, seed = args
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    pad = random.Random(seed).randbytes(SIZE)
    now_ms = int(time.time() * 1000)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    last_d = -1
    for i in range(lo, hi):
        d = i // PER_DIR
        if d != last_d:
            os.makedirs(os.path.join(objects, f"d{d:04}"), exist_ok=True)
            os.makedirs(os.path.join(meta, f"d{d:04}"), exist_ok=True)
            last_d = d
        r = rel(i)
        body = body_of(i, pad)
        fd = os.open(os.path.join(objects, r), flags, 0o644)
        os.write(fd, body)
        mtime = os.fstat(fd).st_mtime
        os.close(fd)
        fd = os.open(os.path.join(meta, r + ";meta.json"), flags, 0o644)
        os.write(fd, record_of(template, body, mtime, now_ms))
        os.close(fd)
    return hi - lo


def generate(data, template, first, seed):
    """Objects [first, N) and their records, in JOBS processes (whole directories each)."""
    objects, meta = os.path.join(data, "objects", REMOTE), os.path.join(data, "meta", REMOTE)
    chunk = 20 * PER_DIR
    ranges = [(objects, meta, template, lo, min(lo + chunk, N), seed)
              for lo in range(first, N, chunk)]
    done, t0, next_log = first, time.monotonic(), 200000
    with multiprocessing.get_context("fork").Pool(JOBS) as pool:
        for n in pool.imap_unordered(write_range, ranges):
            done += n
            if done >= next_log:
                rate = (done - first) / max(time.monotonic() - t0, 1e-9)
                log(f"  {done} objects written ({rate:.0f}/s)")
                next_log += 200000


# --- processes ---------------------------------------------------------------------------------
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


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pids):
    """Sum of Pss (shared pages split between the processes that map them)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def get(port, path, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def health_ok(port):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=0.5)
    except OSError:
        return False
    with s:
        try:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False


def cached_objects(port):
    """The sum of artifactapi_cache_objects over repositories, from /metrics."""
    try:
        _, _, body = get(port, "/metrics", timeout=5)
    except OSError:
        return None
    total = 0
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("artifactapi_cache_objects{") or line.startswith("artifactapi_cache_objects "):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def metric(port, name, label):
    """The value of NAME{...LABEL...} from /metrics, summed, 0 when absent."""
    _, _, body = get(port, "/metrics")
    total = 0.0
    for line in body.decode(errors="replace").splitlines():
        if line.startswith(name) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def start_artifactapi(work, data, origin_port, tag, expect):
    """Starts serve on DATA and times it: seconds to the first /health 200, then seconds until
    the background count is done (the log line 'cache usage ready', else artifactapi_cache_objects
    reaching EXPECT), the peak RSS meanwhile and the RSS once counted."""
    port = free_port()
    conf = os.path.join(work, "artifactapi.yaml")
    with open(conf, "w") as f:
        f.write(
            f"storage:\n  path: {data}\nremotes:\n  {REMOTE}:\n    type: remote\n    package: generic\n"
            f"    base_url: http://127.0.0.1:{origin_port}\n"
        )
    log_path = os.path.join(work, f"artifactapi-{tag}.log")
    out = open(log_path, "w")
    args = [BIN, "--config", conf, "serve", "--listen", f"127.0.0.1:{port}"]
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "RUST_LOG": "info"})
    PROCS.append(proc)
    out.close()
    while not health_ok(port):
        if proc.poll() is not None:
            die(f"artifactapi exited with {proc.returncode} before /health answered 200; see {log_path}")
        if time.monotonic() - t0 > 60:
            die(f"/health did not answer 200 in 60 s; see {log_path}")
        time.sleep(0.001)
    first_200 = time.monotonic() - t0
    counted, how, peak = None, None, 0
    while counted is None:
        peak = max(peak, rss_kib(proc.pid))
        with open(log_path) as f:
            m = re.search(r"cache usage ready.*?ms=(\d+)", f.read())
        if m:
            counted, how = int(m.group(1)) / 1000, "log"
            break
        n = cached_objects(port)
        if n is not None and n >= expect:
            counted, how = time.monotonic() - t0, "metrics"
            break
        if proc.poll() is not None:
            die(f"artifactapi exited with {proc.returncode} while counting; see {log_path}")
        if time.monotonic() - t0 > 900:
            die(f"the count was not done after 900 s ({n} of {expect} objects); see {log_path}")
        time.sleep(0.05)
    time.sleep(0.2)  # let the count's buffers go before reading RSS
    rss = rss_kib(proc.pid)
    return proc, port, first_200, counted, how, max(peak, rss), rss


def nginx(dir, body, port, workers):
    os.makedirs(dir, exist_ok=True)
    conf = os.path.join(dir, "nginx.conf")
    user = "user root;\n" if os.geteuid() == 0 else ""
    with open(conf, "w") as f:
        f.write(
            f"{user}worker_processes {workers};\ndaemon off;\npid {dir}/nginx.pid;\n"
            f"error_log {dir}/error.log warn;\nworker_rlimit_nofile 65536;\n"
            f"events {{ worker_connections 4096; }}\n"
            f"http {{\n  access_log off; sendfile on; keepalive_requests 1000000;\n"
            f"  client_body_temp_path {dir}/b; proxy_temp_path {dir}/p; fastcgi_temp_path {dir}/f;\n"
            f"  uwsgi_temp_path {dir}/u; scgi_temp_path {dir}/s;\n{body}\n}}\n"
        )
    proc = subprocess.Popen(["nginx", "-c", conf, "-p", dir], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PROCS.append(proc)
    for _ in range(200):
        if proc.poll() is not None:
            die(f"nginx exited with {proc.returncode}; see {dir}/error.log")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    die(f"nginx did not listen on {port}; see {dir}/error.log")


def origin_conf(port, root, access_log):
    return (f"  server {{ listen 127.0.0.1:{port}; root {root};\n"
            f"    location / {{ access_log {access_log}; }} }}")


# --- wrk ---------------------------------------------------------------------------------------
LUA_PATH = f"""
local n, per_dir = {N}, {PER_DIR}
function path(i) return string.format("%sd%04d/o%07d.bin", prefix, math.floor(i / per_dir), i) end
"""


def wrk_random(port, prefix, conns, work):
    """Requests/s and p99 (ms) of GETs of keys picked uniformly at random among the N."""
    script = os.path.join(work, "random.lua")
    with open(script, "w") as f:
        f.write(f'prefix = "{prefix}"\n' + LUA_PATH + """
local threads = {}
function setup(thread) thread:set("id", #threads); table.insert(threads, thread) end
function init(args) math.randomseed(os.time() * 1000 + (id or 0) * 7919) end
function request() return wrk.format("GET", path(math.random(0, n - 1))) end
""")
    threads = min(WRK_THREADS, conns)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{SECONDS}s", "--latency", "-s", script,
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True,
    )
    if out.returncode != 0:
        die(f"wrk failed: {out.stdout}{out.stderr}")
    text = out.stdout
    m = re.search(r"Requests/sec:\s+([0-9.]+)", text)
    if not m:
        die(f"no Requests/sec in wrk output:\n{text}")
    if "Non-2xx" in text or "Socket errors" in text:
        die(f"wrk saw errors:\n{text}")
    p99 = re.search(r"99%\s+([0-9.]+)(us|ms|s)\b", text)
    p99_ms = None
    if p99:
        p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return float(m.group(1)), p99_ms


def wrk_sweep(port, prefix, conns, work):
    """GETs every key once, in order, on CONNS connections of one wrk thread; returns the
    number of answers that were not 200."""
    script = os.path.join(work, "sweep.lua")
    with open(script, "w") as f:
        f.write(f'prefix = "{prefix}"\n' + LUA_PATH + """
local at, done, bad = 0, 0, 0
function request()
  local i = at
  if at < n then at = at + 1 else i = 0 end
  return wrk.format("GET", path(i))
end
function response(status, headers, body)
  done = done + 1
  if status ~= 200 then bad = bad + 1 end
  if done >= n then io.write("sweep done ", done, " bad ", bad, "\\n"); os.exit(0) end
end
""")
    cap = max(120, N // 500)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{cap}s", "-s", script, f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True,
    )
    m = re.search(r"sweep done (\d+) bad (\d+)", out.stdout)
    if not m:
        die(f"the sweep did not finish in {cap} s:\n{out.stdout}{out.stderr}")
    return int(m.group(2))


def count_files(path):
    return sum(len(files) for _, _, files in os.walk(path))


# --- the run -----------------------------------------------------------------------------------
def template_fill(work):
    """Fills a few objects through real requests into a scratch data dir, from an origin nginx
    configured as the real one, and returns the record of one of them (key order kept). Then
    checks the generator writes the same objects and records at the same paths, byte for byte
    (fetched_at_ms aside)."""
    k = 3
    tdir = os.path.join(work, "template")
    shutil.rmtree(tdir, ignore_errors=True)
    www, gen, data = (os.path.join(tdir, d) for d in ("www", "gen", "data"))
    pad = random.Random(1).randbytes(SIZE)
    # The origin's files, as the generator writes object bodies.
    for i in range(k):
        p = os.path.join(www, rel(i))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(body_of(i, pad))
    port = free_port()
    origin = nginx(os.path.join(tdir, "origin"), origin_conf(port, www, "off"), port, 1)
    api, api_port, *_ = start_artifactapi(tdir, data, port, "template", 0)
    for i in range(k):
        st, h, body = get(api_port, API_PREFIX + rel(i))
        if st != 200 or h.get("x-cache") != "MISS" or body != body_of(i, pad):
            die(f"filling {rel(i)} through artifactapi: {st} {h.get('x-cache')}")
    stop(api)
    stop(origin)
    real = {}
    for root, _, files in os.walk(data):
        for name in files:
            p = os.path.join(root, name)
            real[os.path.relpath(p, data)] = open(p, "rb").read()
    expected_paths = {os.path.join("objects", REMOTE, rel(i)) for i in range(k)}
    expected_paths |= {os.path.join("meta", REMOTE, rel(i) + ";meta.json") for i in range(k)}
    if set(real) != expected_paths:
        die(f"the fills left {sorted(real)}, expected {sorted(expected_paths)}")
    template = json.loads(real[os.path.join("meta", REMOTE, rel(0) + ";meta.json")])
    # The generator, on the same bodies, must write what the fills wrote.
    for i in range(k):
        mtime = os.stat(os.path.join(www, rel(i))).st_mtime
        rec_path = os.path.join("meta", REMOTE, rel(i) + ";meta.json")
        real_rec = json.loads(real[rec_path])
        gen_rec = json.loads(record_of(template, body_of(i, pad), mtime, real_rec["fetched_at_ms"]))
        if list(gen_rec.items()) != list(real_rec.items()):
            die(f"generated record {gen_rec} differs from the fill's {real_rec}")
        if real[os.path.join("objects", REMOTE, rel(i))] != body_of(i, pad):
            die(f"the fill stored other bytes for {rel(i)}")
        if b"\n" in real[rec_path] or json.dumps(real_rec, separators=(",", ":")).encode() != real[rec_path]:
            die(f"the record of {rel(i)} is not compact JSON as the generator writes it")
    shutil.rmtree(tdir, ignore_errors=True)
    log(f"layout from {k} real fills: objects/{REMOTE}/PATH and meta/{REMOTE}/PATH;meta.json, "
        f"record fields {list(template)}")
    return template


def check_hits(port, prefix, name, sample):
    for i in sample:
        st, h, body = get(port, prefix + rel(i))
        if st != 200 or h.get("x-cache") != "HIT" or len(body) != SIZE or body[:16] != f"{i:016}".encode():
            die(f"{name}: {rel(i)} answered {st} X-Cache {h.get('x-cache')} with {len(body)} bytes, not a hit")


def main():
    if N < 1 or SIZE < 16 or not CONNS or STARTS < 1 or JOBS < 1 or SECONDS < 1:
        die("BENCH_SCALE_OBJECTS, _STARTS, _JOBS, _WRK_SECONDS must be positive, _SIZE at least 16")
    base = os.environ.get("BENCH_SCALE_DIR")
    made_base = not base
    if base:
        base = os.path.abspath(base)
        made_base = not os.path.exists(base)
        os.makedirs(base, exist_ok=True)
    else:
        os.makedirs("target", exist_ok=True)
        base = tempfile.mkdtemp(prefix="bench-scale.", dir=os.path.abspath("target"))
    data = os.path.join(base, "data")
    stamp = os.path.join(base, "data.json")
    want = {"objects": N, "size": SIZE, "per_dir": PER_DIR, "layout": LAYOUT}
    created = ["data", "data.json", "origin", "nginx", "nginx-cache", "template", "work"]
    work = os.path.join(base, "work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    report_extra = {}
    try:
        reuse = False
        if os.path.exists(stamp):
            try:
                reuse = json.load(open(stamp)) == want
            except ValueError:
                pass
        # Space: the objects, records and nginx's cache files take a 4 KiB block each at 1 KiB.
        st = os.statvfs(base)
        block = max(st.f_frsize, 4096)
        per_file = -(-SIZE // block) * block
        need_bytes = N * (per_file + block + -(-(SIZE + 1024) // block) * block) + (1 << 30)
        need_inodes = N * 3 + 3 * (N // PER_DIR) + 100000
        if reuse:
            need_bytes, need_inodes = need_bytes // 3, need_inodes // 3
        free_b, free_i = st.f_bavail * st.f_frsize, st.f_favail
        log(f"data under {base}: {free_b >> 30} GiB and {free_i} inodes free; "
            f"needs about {need_bytes >> 30} GiB and {need_inodes} inodes")
        if free_b < need_bytes or free_i < need_inodes:
            die(f"{base}: needs {need_bytes >> 20} MiB and {need_inodes} inodes free, has "
                f"{free_b >> 20} MiB and {free_i}")

        origin_port = free_port()
        origin_log = os.path.join(work, "origin-access.log")
        if reuse:
            log(f"reusing the {N} objects in {data} (BENCH_SCALE_KEEP=1 run before)")
            gen_secs = None
        else:
            shutil.rmtree(data, ignore_errors=True)
            if os.path.exists(stamp):
                os.remove(stamp)
            template = template_fill(work)
            t0 = time.monotonic()
            generate(data, template, 0, 2)
            os.makedirs(os.path.join(data, "tmp"), exist_ok=True)
            gen_secs = time.monotonic() - t0
            log(f"{N} objects of {SIZE} bytes and their records written in {gen_secs:.0f}s "
                f"({N / gen_secs:.0f}/s, {JOBS} processes)")
            with open(stamp, "w") as f:
                json.dump(want, f)
        # The origin serves the object files themselves: nginx's cache is filled from them.
        origin = nginx(os.path.join(base, "origin"),
                       origin_conf(origin_port, os.path.join(data, "objects", REMOTE), origin_log),
                       origin_port, 2)

        # --- start-up, count, RSS ---
        runs = []
        for k in range(STARTS):
            proc, port, first, counted, how, peak, rss = start_artifactapi(work, data, origin_port, f"run{k}", N)
            runs.append({"first_200_ms": round(first * 1000, 1), "count_done_s": round(counted, 2),
                         "count_from": how, "rss_peak_kib": peak, "rss_counted_kib": rss})
            log(f"start {k + 1}/{STARTS}: /health 200 after {first * 1000:.0f} ms, count done after "
                f"{counted:.1f} s ({how}), RSS {rss >> 10} MiB (peak {peak >> 10} MiB)")
            if k < STARTS - 1:
                stop(proc)
        counted_objects = cached_objects(port)
        if counted_objects != N:
            die(f"artifactapi counted {counted_objects} objects, expected {N}")
        sample = random.Random(3).sample(range(N), min(N, 5))
        check_hits(port, API_PREFIX, "artifactapi", sample)

        # --- nginx proxy_cache over the same objects, filled through requests ---
        cache_port = free_port()
        cache_dir = os.path.join(base, "nginx-cache")
        shutil.rmtree(cache_dir, ignore_errors=True)
        os.makedirs(cache_dir)
        zone_mib = max(16, -(-N * 5 // 4 // 8000))  # one megabyte holds about 8,000 keys
        ngx = nginx(
            os.path.join(base, "nginx"),
            f"  upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}\n"
            f"  proxy_cache_path {cache_dir} levels=1:2 keys_zone=c:{zone_mib}m inactive=30d"
            f" use_temp_path=off;\n"
            f"  server {{ listen 127.0.0.1:{cache_port}; location / {{ proxy_pass http://origin;"
            f" proxy_http_version 1.1; proxy_set_header Connection \"\";"
            f" proxy_cache c; proxy_cache_valid 200 30d;"
            f" add_header X-Cache $upstream_cache_status always; }} }}",
            cache_port, 2,
        )
        t0 = time.monotonic()
        bad = wrk_sweep(cache_port, "/", 32, work)
        fill_secs = time.monotonic() - t0
        in_cache = count_files(cache_dir)
        log(f"nginx cache filled through {N} requests in {fill_secs:.0f}s ({N / fill_secs:.0f}/s): "
            f"{in_cache} cache files, {bad} answers not 200")
        if bad or in_cache < N:
            die(f"nginx's cache holds {in_cache} files of {N} ({bad} answers not 200)")
        check_hits(cache_port, "/", "nginx", sample)

        # --- random-key hits ---
        origin_before = os.path.getsize(origin_log)
        upstream_before = metric(port, "artifactapi_upstream_requests_total", "")
        rows = []
        for conns in CONNS:
            a, a99 = wrk_random(port, API_PREFIX, conns, work)
            n, n99 = wrk_random(cache_port, "/", conns, work)
            rows.append({"connections": conns, "artifactapi_rps": round(a), "nginx_rps": round(n),
                         "ratio": round(a / n, 3) if n else None,
                         "artifactapi_p99_ms": a99, "nginx_p99_ms": n99})
            log(f"{conns} connections: artifactapi {a:.0f} req/s (p99 {a99} ms), nginx {n:.0f} req/s "
                f"(p99 {n99} ms): {a / max(n, 1e-9):.2f}x")
        rss_loaded = rss_kib(proc.pid)
        ngx_pids = [ngx.pid] + children(ngx.pid)
        ngx_pss = pss_kib(ngx_pids)
        if os.path.getsize(origin_log) != origin_before:
            die("the origin was asked during the random-key runs: not every answer was a hit")
        if metric(port, "artifactapi_upstream_requests_total", "") != upstream_before:
            die("artifactapi went upstream during the random-key runs")
        stop(proc)
        stop(ngx)
        stop(origin)
        report_extra = {"generate_s": round(gen_secs, 1) if gen_secs else None, "reused_data": reuse,
                        "nginx_fill_s": round(fill_secs, 1), "nginx_keys_zone_mib": zone_mib,
                        "nginx_pss_kib_after_load": ngx_pss}
        report(runs, rss_loaded, rows, report_extra)
    finally:
        for p in list(PROCS):
            stop(p)
        if KEEP:
            log(f"data kept in {base}; run again with BENCH_SCALE_DIR={base} BENCH_SCALE_KEEP=1 to reuse it")
        else:
            for name in created:
                p = os.path.join(base, name)
                if os.path.isdir(p):
                    shutil.rmtree(p, ignore_errors=True)
                elif os.path.exists(p):
                    os.remove(p)
            if made_base:
                try:
                    os.rmdir(base)
                except OSError:
                    pass


def report(runs, rss_loaded, rows, extra):
    os.makedirs(OUT, exist_ok=True)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    firsts = [r["first_200_ms"] for r in runs]
    counts = [r["count_done_s"] for r in runs]
    last = runs[-1]
    median = statistics.median(firsts)
    mib = lambda kib: kib / 1024  # noqa: E731
    total_s = time.monotonic() - T_START
    result = {
        "commit": COMMIT, "date": when, "cpus": os.cpu_count(),
        "params": {"objects": N, "object_bytes": SIZE, "starts": STARTS, "wrk_seconds": SECONDS,
                   "wrk_threads": WRK_THREADS, "connections": CONNS, "objects_per_dir": PER_DIR},
        "targets": {"startup_ms": 1000, "rss_mib": 200, "hits_ratio": 1.0},
        "startup": {"runs": runs, "median_first_200_ms": median, "max_first_200_ms": max(firsts),
                    "median_count_done_s": statistics.median(counts)},
        "rss_kib_after_count": last["rss_counted_kib"], "rss_kib_peak_during_count": last["rss_peak_kib"],
        "rss_kib_after_load": rss_loaded,
        "hits": rows,
        **extra,
        "bench_seconds_excluding_build": round(total_s),
    }
    with open(os.path.join(OUT, "scale.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    met = lambda ok: "yes" if ok else "**no**"  # noqa: E731
    rss_max = max(last["rss_counted_kib"], rss_loaded)
    data_note = ("reused from an earlier run with BENCH_SCALE_KEEP=1" if extra.get("reused_data")
                 else f"written in {extra.get('generate_s')}s")
    lines = [
        f"## artifactapi scale benchmark ({COMMIT}, {when})",
        "",
        f"{N:,} cached objects of {SIZE} B in one generic remote on the embedded default "
        f"(filesystem storage, embedded records), {PER_DIR} per directory, written in the layout "
        f"and with the records that real fills leave ({data_note}). nginx `proxy_cache` "
        f"(levels=1:2, keys_zone {extra.get('nginx_keys_zone_mib')}m, 2 workers) over the same "
        f"objects, its cache filled by requesting every key once through it "
        f"({extra.get('nginx_fill_s')}s). {os.cpu_count()} CPUs, loopback, wrk on the same machine.",
        "",
        "| measure | value | target | met |",
        "|---|---:|---:|:-:|",
        f"| start-up to the first `/health` 200, median of {len(runs)} (max) | {median:.0f} ms "
        f"({max(firsts):.0f} ms) | < 1000 ms | {met(median < 1000)} |",
        f"| background count done after, median of {len(runs)} (from {last['count_from']}) "
        f"| {statistics.median(counts):.1f} s | | |",
        f"| RSS once counted (peak while counting) | {mib(last['rss_counted_kib']):.0f} MiB "
        f"({mib(last['rss_peak_kib']):.0f} MiB) | < 200 MiB | {met(mib(last['rss_peak_kib']) < 200)} |",
        f"| RSS after the random-key runs | {mib(rss_loaded):.0f} MiB | < 200 MiB "
        f"| {met(mib(rss_max) < 200)} |",
        f"| nginx Pss after the runs (master, workers, cache manager) | "
        f"{mib(extra.get('nginx_pss_kib_after_load', 0)):.0f} MiB | | |",
        "",
        f"Random-key hits: wrk -t{WRK_THREADS} -d{SECONDS}s, every request a key drawn uniformly "
        f"among the {N:,} (same Lua script for both; both answered HIT, the origin saw no request).",
        "",
        "| connections | artifactapi req/s | nginx req/s | ratio | artifactapi p99 ms | nginx p99 ms |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['connections']} | {r['artifactapi_rps']} | {r['nginx_rps']} | **{r['ratio']:.2f}x** "
            f"| {r['artifactapi_p99_ms']} | {r['nginx_p99_ms']} |"
        )
    lines += ["", f"Bench time {total_s:.0f}s, excluding the build.", ""]
    with open(os.path.join(OUT, "scale.md"), "w") as f:
        f.write("\n".join(lines))
    print("\n" + "\n".join(lines))
    log(f"wrote {OUT}/scale.json and {OUT}/scale.md")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    except KeyboardInterrupt:
        log("interrupted")
        sys.exit(130)
