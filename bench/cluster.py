"""Cluster benchmark: relay between two nodes on Redis against one node, in one run.

    .venv/bin/python bench/cluster.py [--quick]

Runs the same Node load generator (bench/loadgen.js: `signal` from a sender to
its peer, acked) three times, one after the other, on 127.0.0.1:

  one node      one `mikoto-rtc serve`, memory store (the reference);
  one on Redis  the same node with MIKOTO_RTC_REDIS_URL (what the store costs);
  two nodes     two nodes on one Redis, every sender on node A and its peer on
                node B, so every message crosses nodes.

All servers (nodes and redis-server) are pinned to CPU 0 and the generator to
CPU 1, so each setup has the same single core: "per CPU-second" counts the
nodes' and Redis's CPU together. Prints throughput, msgs per server CPU-second,
and relay latency p50/p99 at a fixed offered rate, each with its ratio to one
node. Not part of CI; see bench/README.md for figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relay import (
    ROOT,
    SERVER_CPU,
    Loadgen,
    Procs,
    cpu_seconds,
    ensure_node_modules,
    median,
    mint_token,
    pick_ports,
    pin,
    tail,
    wait_quiet,
    wait_ready,
)

SECRET = "bench-cluster-secret-0123456789-abcdefgh"


def start_redis(procs: Procs, port: int, workdir: Path) -> subprocess.Popen[Any]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("cluster.py: redis-server is not installed (apt-get install redis-server)")
    proc = procs.spawn([*pin(SERVER_CPU), binary, "--port", str(port), "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no", "--dir", str(workdir),
                        "--logfile", str(workdir / "redis.log")],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                             text=True)
        if out.stdout.strip() == "PONG":
            return proc
        time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def start_node(procs: Procs, port: int, workdir: Path, name: str, redis_url: str | None,
               prefix: str, log_level: str) -> subprocess.Popen[Any]:
    env = dict(os.environ, MIKOTO_RTC_SECRET=SECRET, MIKOTO_RTC_ROOM_MAX_PARTICIPANTS="100000",
               MIKOTO_RTC_LOG_LEVEL=log_level, MIKOTO_RTC_MEDIA_WORKERS="0",
               # Rate limits stay on the path, out of reach of the load generator.
               **{f"MIKOTO_RTC_RATE_{kind}": "1000000000/1000000000"
                  for kind in ("SIGNAL", "PRESENCE", "FILE", "OTHER", "CONNECT", "AUTH_FAILURES")},
               # Every connection of the load generator is one user: no per-user caps.
               MIKOTO_RTC_MAX_CONNECTIONS_PER_USER="0", MIKOTO_RTC_MAX_ROOMS_PER_USER="0",
               PYTHONUNBUFFERED="1")
    if redis_url:
        env.update(MIKOTO_RTC_REDIS_URL=redis_url, MIKOTO_RTC_REDIS_PREFIX=prefix)
    log = workdir / f"{name}.log"
    with log.open("w") as logf:
        proc = procs.spawn([*pin(SERVER_CPU), sys.executable, "-m", "signaling", "serve",
                            "--host", "127.0.0.1", "--port", str(port)],
                           env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=logf,
                           stderr=subprocess.STDOUT)
    wait_ready(proc, port, log)
    return proc


def measure(procs: Procs, pids: list[int], url: str, peer_url: str, mode: str,
            extra: list[str], opts: argparse.Namespace, log: Path) -> dict[str, Any]:
    longest = opts.warmup + opts.duration + 120
    args = ["--mode", mode, "--pairs", str(opts.pairs), "--payload", str(opts.payload),
            "--warmup", str(opts.warmup), "--duration", str(opts.duration),
            "--max-seconds", str(longest), "--peer-url", peer_url, *extra]
    lg = Loadgen(procs, pids, url, mint_token(SECRET), args, longest + 30, log)
    res = lg.result()
    marks = lg.marks
    if "measure_start" in marks and "measure_end" in marks:
        a, b = marks["measure_start"], marks["measure_end"]
        cpu = b["cpu"] - a["cpu"]
        res["server_cpu_s"] = cpu
        if mode == "throughput":
            res["msgs_per_cpu_s"] = res["received"] / cpu if cpu > 0 else None
    for pid in pids:
        wait_quiet(pid)
    return res


def run_setup(name: str, nodes: int, redis_url: str | None, redis_pid: int | None,
              ports: list[int], opts: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    print(f"== {name}", file=sys.stderr, flush=True)
    procs = Procs()
    out: dict[str, Any] = {"name": name}
    try:
        tag = name.replace(" ", "-")
        started = [start_node(procs, ports[i], workdir, f"{tag}-{i}", redis_url,
                              f"bench-{tag}", opts.log_level) for i in range(nodes)]
        pids = [p.pid for p in started] + ([redis_pid] if redis_pid else [])
        urls = [f"http://127.0.0.1:{p}" for p in ports[:nodes]]
        url, peer = urls[0], urls[-1]
        log = workdir / f"loadgen-{name.replace(' ', '-')}.log"
        measure(procs, pids, url, peer, "latency", ["--rate", "200"],
                argparse.Namespace(**{**vars(opts), "warmup": 0.5, "duration": 1}), log)
        lat, thr = [], []
        for i in range(opts.repeat):
            print(f"   latency {i + 1}/{opts.repeat} at {opts.rate:g} msgs/s", file=sys.stderr,
                  flush=True)
            lat.append(measure(procs, pids, url, peer, "latency", ["--rate", str(opts.rate)],
                               opts, log))
            print(f"   throughput {i + 1}/{opts.repeat}", file=sys.stderr, flush=True)
            thr.append(measure(procs, pids, url, peer, "throughput",
                               ["--window", str(opts.window)], opts, log))
        out.update(ok=True, msgs_per_s=median(thr, "msgs_per_s"),
                   msgs_per_cpu_s=median(thr, "msgs_per_cpu_s"),
                   p50_ms=median(lat, "latency_ms", "p50"),
                   p99_ms=median(lat, "latency_ms", "p99"),
                   runs={"latency": lat, "throughput": thr})
    except Exception as exc:
        print(f"   {name} failed: {exc}\n{tail(workdir / 'redis.log', 5)}", file=sys.stderr)
        out.update(ok=False, error=str(exc))
    finally:
        procs.close()
    return out


def report(results: list[dict[str, Any]], opts: argparse.Namespace) -> str:
    base = results[0]
    rows = [("setup", "msgs/s", "ratio", "msgs/CPU-s", "ratio", "p50 ms", "p99 ms",
             f"p99 ratio @{opts.rate:g}/s")]

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}" if a is not None and b else "-"

    def num(x: float | None, digits: int = 0) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    for r in results:
        rows.append((r["name"], num(r.get("msgs_per_s")),
                     ratio(r.get("msgs_per_s"), base.get("msgs_per_s")),
                     num(r.get("msgs_per_cpu_s")),
                     ratio(r.get("msgs_per_cpu_s"), base.get("msgs_per_cpu_s")),
                     num(r.get("p50_ms"), 2), num(r.get("p99_ms"), 2),
                     ratio(r.get("p99_ms"), base.get("p99_ms"))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short run of each (about 40 s)")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--rate", type=float, default=500, help="offered msgs/s for latency")
    ap.add_argument("--payload", type=int, default=1024)
    ap.add_argument("--duration", type=float)
    ap.add_argument("--warmup", type=float)
    ap.add_argument("--repeat", type=int)
    ap.add_argument("--log-level", default="WARNING")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    opts = ap.parse_args(argv)
    opts.duration = opts.duration or (3.0 if opts.quick else 10.0)
    opts.warmup = opts.warmup or (1.0 if opts.quick else 2.0)
    opts.repeat = opts.repeat or (1 if opts.quick else 3)
    ensure_node_modules()
    ports = pick_ports(3)
    workdir = Path(tempfile.mkdtemp(prefix="mikoto-cluster-bench-"))
    procs = Procs()
    try:
        redis = start_redis(procs, ports[2], workdir)
        redis_url = f"redis://127.0.0.1:{ports[2]}/0"
        results = [
            run_setup("one node", 1, None, None, ports, opts, workdir),
            run_setup("one on Redis", 1, redis_url, redis.pid, ports, opts, workdir),
            run_setup("two nodes", 2, redis_url, redis.pid, ports, opts, workdir),
        ]
        print(f"\nRelay over {opts.pairs} pairs (window {opts.window}, {opts.duration:g} s,"
              f" median of {opts.repeat}); servers on CPU {SERVER_CPU}, Redis counted in"
              f" CPU when used; ratios against one node.\n")
        print(report(results, opts))
        print(f"\nredis-server CPU over the run: {cpu_seconds(redis.pid):.1f} s")
        if opts.json:
            opts.json.write_text(json.dumps(results, indent=2))
    finally:
        procs.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(r.get("ok") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
