"""Relay benchmark: mikoto-rtc against a reference Node socket.io server.

    .venv/bin/python bench/relay.py [--quick]

Starts our node (`python -m signaling serve`) and bench/reference/server.js one
after the other on 127.0.0.1 (ports 8780-8789), runs the same load generator
(bench/loadgen.js) against each, then both again for latency runs taking turns,
samples each server's CPU time and RSS from /proc, and prints a table. Not part
of CI. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PORTS = range(8780, 8790)
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CPU = "0"
LOADGEN_CPU = "1"


# --------------------------------------------------------------------- /proc
def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (a server that forks workers is counted whole)."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(_children(p))
    return seen


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process tree, in seconds."""
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def slice_us(pid: int) -> float | None:
    """The scheduler time slice the process has (Linux 6.6+ shows it): ours asks for a
    short one (signaling/sched.py), the reference keeps the kernel's default."""
    try:
        with open(f"/proc/{pid}/sched") as f:
            for line in f:
                if line.startswith("se.slice"):
                    return int(line.split(":")[1]) / 1000
    except OSError:
        pass
    return None


def rss_kb(pid: int) -> int:
    """VmRSS of the process tree, in kB."""
    total = 0
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def system_cpu() -> list[int]:
    """The aggregate `cpu` line of /proc/stat, in clock ticks."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def system_noise(a: list[int], b: list[int], server_cpu: float, loadgen_util: float | None
                 ) -> dict[str, float]:
    """Steal time and CPU used by anything but the server and the loadgen in a window,
    both in cores (1.0 = one whole core)."""
    d = [y - x for x, y in zip(a, b, strict=False)]
    total = sum(d[:8]) or 1  # user nice system idle iowait irq softirq steal
    busy = total - d[3] - d[4]
    wall = total / CLK_TCK / (os.cpu_count() or 1)
    other = busy / CLK_TCK - server_cpu - (loadgen_util or 0) * wall
    ncpu = os.cpu_count() or 1
    return {
        "steal_cores": ncpu * d[7] / total if len(d) > 7 else 0.0,
        "other_cores": max(0.0, other / wall) if wall > 0 else 0.0,
    }


def background_load(seconds: float = 1.0) -> float:
    """Cores busy (or stolen) machine-wide over a short sample, before we start anything."""
    a = system_cpu()
    time.sleep(seconds)
    d = [y - x for x, y in zip(a, system_cpu(), strict=False)]
    total = sum(d[:8]) or 1
    return (os.cpu_count() or 1) * (total - d[3] - d[4]) / total


def median(runs: list[dict[str, Any]], *key: str) -> float | None:
    """Median of one metric over runs (None if no run has it)."""
    vals = sorted(v for v in (_get(r, *key) for r in runs) if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def median_of(runs: list[dict[str, Any]], key: tuple[str, ...]) -> dict[str, Any]:
    """The run whose `key` is the median (lower median for an even count)."""
    def k(r: dict[str, Any]) -> float:
        v = _get(r, *key)
        return v if v is not None else float("-inf")
    ranked = sorted(runs, key=k)
    return {**ranked[(len(ranked) - 1) // 2], "runs": len(runs),
            "range": [_get(ranked[0], *key), _get(ranked[-1], *key)]}


# --------------------------------------------------------------------- processes
@dataclass
class Procs:
    """Every process this run started; all are ended in `close()`."""

    started: list[subprocess.Popen[Any]] = field(default_factory=list)

    def spawn(self, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        proc = subprocess.Popen(argv, start_new_session=True, **kw)
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        else:
            # The leader is gone; end anything it left in its own process group.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        for proc in reversed(self.started):
            try:
                self.stop(proc)
            except Exception as exc:  # keep going: every process must be ended
                print(f"relay.py: could not stop pid {proc.pid}: {exc}", file=sys.stderr)


def pin(cpu: str) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", cpu]
    return []


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(n: int) -> list[int]:
    free = [p for p in PORTS if port_free(p)]
    if len(free) < n:
        raise SystemExit(f"relay.py: need {n} free ports in 8780-8789, found {free}")
    return free[:n]


def wait_ready(proc: subprocess.Popen[Any], port: int, log: Path, timeout: float = 30.0) -> None:
    """Poll the port, then GET /healthz until 200; fail fast if the server died."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{port}/healthz"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server on port {port} not ready after {timeout}s:\n{tail(log)}")


def wait_quiet(pid: int, timeout: float = 15.0) -> None:
    """Wait until the server uses < 2% CPU over 250 ms (e.g. after mass disconnects)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        c0 = cpu_seconds(pid)
        time.sleep(0.25)
        if cpu_seconds(pid) - c0 < 0.005:
            return


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------- loadgen
class Loadgen:
    """One loadgen.js run; samples the server's /proc at its MARK lines."""

    def __init__(self, procs: Procs, server_pid: int | list[int], url: str, token: str,
                 args: list[str], timeout: float, log: Path) -> None:
        # Several pids: the servers' CPU is summed, and RSS is the first one's.
        self.server_pids = server_pid if isinstance(server_pid, list) else [server_pid]
        self.server_pid = self.server_pids[0]
        self.timeout = timeout
        self.marks: dict[str, dict[str, Any]] = {}
        self.holding = threading.Event()
        self.log = log
        argv = [*pin(LOADGEN_CPU), "node", str(BENCH / "loadgen.js"),
                "--url", url, "--token", token, *args]
        self.proc = procs.spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=BENCH)
        self._stderr_lines: list[str] = []
        self._stdout: list[str] = []
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self._out_reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._out_reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._stdout.append(line)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        with self.log.open("a") as logf:
            for line in self.proc.stderr:
                if line.startswith("MARK "):
                    ev = json.loads(line[5:])
                    self.marks[ev["event"]] = {
                        "cpu": sum(cpu_seconds(p) for p in self.server_pids),
                        "rss": rss_kb(self.server_pid),
                        "sys": system_cpu(),
                        "t": time.monotonic(),
                    }
                    if ev["event"] == "holding":
                        self.holding.set()
                logf.write(line)
                self._stderr_lines.append(line)

    def release(self) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write("release\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def result(self) -> dict[str, Any]:
        # Not communicate(): it would read stderr too, racing the MARK reader.
        try:
            self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"loadgen did not finish within {self.timeout}s") from exc
        self._reader.join(5)
        self._out_reader.join(5)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        lines = [ln for ln in "".join(self._stdout).splitlines() if ln.strip()]
        if not lines:
            raise RuntimeError("loadgen printed no result:\n" + "".join(self._stderr_lines[-20:]))
        res: dict[str, Any] = json.loads(lines[-1])
        if not res.get("ok"):
            print(f"  warning: loadgen reported a problem: {json.dumps(res)[:400]}",
                  file=sys.stderr)
        return res


# --------------------------------------------------------------------- servers
def mint_token(secret: str) -> str:
    import jwt  # PyJWT, in the project's venv

    now = int(time.time())
    claims = {
        "sub": "bench",
        "name": "bench",
        "exp": now + 3600,
        "grants": {"rooms": ["*"], "publish": True, "subscribe": True},
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def start_mikoto(procs: Procs, port: int, workdir: Path, log_level: str
                 ) -> tuple[subprocess.Popen[Any], str, Path]:
    secret = secrets.token_urlsafe(32)
    env = dict(os.environ)
    env.update({
        "MIKOTO_RTC_SECRET": secret,
        "MIKOTO_RTC_ROOM_MAX_PARTICIPANTS": "100000",
        # No media worker: the reference has none, and rooms of 10 would be forwarded
        # through it, making it one more recipient of every room event, on the same core.
        "MIKOTO_RTC_MEDIA_WORKERS": "0",
        # The reference has no rate limits: ours stay on the path, set out of reach.
        **{f"MIKOTO_RTC_RATE_{kind}": "1000000000/1000000000"
           for kind in ("SIGNAL", "PRESENCE", "FILE", "OTHER", "CONNECT", "AUTH_FAILURES")},
        # Every connection of the load generator is one user: no per-user caps.
        "MIKOTO_RTC_MAX_CONNECTIONS_PER_USER": "0", "MIKOTO_RTC_MAX_ROOMS_PER_USER": "0",
        "MIKOTO_RTC_LOG_LEVEL": log_level,
        "PYTHONUNBUFFERED": "1",
    })
    log = workdir / "mikoto.log"
    argv = [*pin(SERVER_CPU), sys.executable, "-m", "signaling", "serve",
            "--host", "127.0.0.1", "--port", str(port)]
    with log.open("w") as logf:
        proc = procs.spawn(argv, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                           stdout=logf, stderr=subprocess.STDOUT)
    return proc, mint_token(secret), log


def start_reference(procs: Procs, port: int, workdir: Path, deflate: bool
                    ) -> tuple[subprocess.Popen[Any], str, Path]:
    log = workdir / "reference.log"
    argv = [*pin(SERVER_CPU), "node", str(BENCH / "reference" / "server.js"),
            "--port", str(port), "--host", "127.0.0.1"]
    if deflate:
        argv.append("--deflate")
    env = dict(os.environ, ROOM_MAX_PARTICIPANTS="100000")
    with log.open("w") as logf:
        proc = procs.spawn(argv, env=env, cwd=BENCH, stdin=subprocess.DEVNULL,
                           stdout=logf, stderr=subprocess.STDOUT)
    # Any non-empty token works there; a JWT-shaped one gives it a user id.
    return proc, mint_token("reference-server-does-not-verify-tokens"), log


# --------------------------------------------------------------------- one server
@dataclass
class Server:
    """A running server and how to drive the load generator against it."""

    name: str
    procs: Procs
    proc: subprocess.Popen[Any]
    port: int
    token: str
    opts: argparse.Namespace
    lg_log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def run(self, args: list[str], timeout: float) -> Loadgen:
        common = ["--payload", str(self.opts.payload), "--kind", self.opts.kind]
        if self.opts.no_deflate:
            common.append("--no-deflate")
        return Loadgen(self.procs, self.pid, f"http://127.0.0.1:{self.port}", self.token,
                       [*common, *args], timeout, self.lg_log)

    def warm_up(self) -> None:
        """A little of everything, so later baselines include loaded code."""
        self.run(["--mode", "latency", "--pairs", "2", "--rate", "200", "--warmup", "0.5",
                  "--duration", "1", "--max-seconds", "60"], 90).result()
        wait_quiet(self.pid)

    def measured(self, mode: str, extra: list[str]) -> dict[str, Any]:
        opts = self.opts
        measured_max = opts.warmup + opts.duration + 120
        lg = self.run(["--mode", mode, "--pairs", str(opts.pairs), *extra,
                       "--warmup", str(opts.warmup), "--duration", str(opts.duration),
                       "--max-seconds", str(measured_max)], measured_max + 30)
        res = lg.result()
        m = lg.marks
        if "measure_start" in m and "measure_end" in m:
            a, b = m["measure_start"], m["measure_end"]
            wall = b["t"] - a["t"]
            cpu = b["cpu"] - a["cpu"]
            res["server_cpu_s"] = cpu
            res["server_cpu_util"] = cpu / wall if wall > 0 else None
            res.update(system_noise(a["sys"], b["sys"], cpu, res.get("loadgen_cpu_in_window")))
            if mode in ("throughput", "broadcast"):
                res["msgs_per_cpu_s"] = res["received"] / cpu if cpu > 0 else None
        wait_quiet(self.pid)
        return res

    def latency(self, rate: float, run: int) -> dict[str, Any]:
        print(f"   {self.name} latency {run}/{self.opts.repeat}: {rate:g} msgs/s for"
              f" {self.opts.duration:g}s", file=sys.stderr, flush=True)
        return self.measured("latency", ["--rate", str(rate)])


def start_server(name: str, procs: Procs, start: Any, port: int, opts: argparse.Namespace,
                 workdir: Path) -> Server:
    print(f"== {name}: starting on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    proc, token, log = start(port)
    server = Server(name, procs, proc, port, token, opts, workdir / f"loadgen-{name}.log")
    try:
        wait_ready(proc, port, log)
        server.warm_up()
    except BaseException:
        procs.stop(proc)
        raise
    return server


def bench_server(name: str, procs: Procs, start: Any, port: int, opts: argparse.Namespace,
                 workdir: Path, plain_idle_only: bool = False,
                 latency: bool = True) -> dict[str, Any]:
    """Every measurement on one fresh server; with `plain_idle_only`, only idle connections
    from a client that does not offer deflate (on its own fresh server: a process keeps
    the memory of connections it had, so a second idle run there would look cheap).
    Without `latency`, no latency runs (`latency_side_by_side` makes them)."""
    out: dict[str, Any] = {"name": name, "port": port}
    proc = None
    try:
        server = start_server(name, procs, start, port, opts, workdir)
        proc, pid, run = server.proc, server.pid, server.run
        out["rss_start_kb"] = rss_kb(pid)
        out["slice_us"] = slice_us(pid)

        # (c) idle connections: RSS before and while holding; connect+join rate. Once
        # with the client offering permessage-deflate as browsers do, once without.
        def idle(offer_deflate: bool) -> dict[str, Any]:
            print(f"   idle: {opts.conns} connections, deflate offered: {offer_deflate}",
                  file=sys.stderr, flush=True)
            base = rss_kb(pid)
            args = ["--mode", "idle", "--conns", str(opts.conns), "--hold", "120",
                    "--max-seconds", "300"]
            lg = run(args if offer_deflate else [*args, "--no-deflate"], 320)
            if not lg.holding.wait(240):
                lg.release()
                raise RuntimeError(f"idle: connections not all joined:\n{tail(server.lg_log)}")
            wait_quiet(pid, timeout=10)
            held = rss_kb(pid)
            lg.release()
            res = lg.result()
            wait_quiet(pid)
            return {**res, "rss_before_kb": base, "rss_holding_kb": held,
                    "kb_per_conn": (held - base) / opts.conns,
                    "joins_per_s": opts.conns / res["setup_s"] if res.get("setup_s") else None}

        if plain_idle_only:
            out["idle_plain"] = idle(False)
            out["ok"] = True
            return out
        out["idle"] = {} if opts.hot_path else idle(not opts.no_deflate)
        measured = server.measured

        # (b) latency at fixed offered rates, (a) throughput with a bounded ack window,
        # (d) broadcast in rooms of 10; each repeated, the median run is reported.
        out["latency_runs"] = {rate: [] for rate in opts.rates}
        out["throughput_runs"], out["broadcast_runs"] = [], []
        for i in range(opts.repeat):
            for rate in opts.rates if latency else ():
                out["latency_runs"][rate].append(server.latency(rate, i + 1))
            print(f"   throughput {i + 1}/{opts.repeat}: {opts.pairs} pairs x window"
                  f" {opts.window} for {opts.duration:g}s", file=sys.stderr, flush=True)
            out["throughput_runs"].append(measured("throughput", ["--window", str(opts.window)]))
            print(f"   broadcast {i + 1}/{opts.repeat}: {opts.rooms} rooms of 10 x window"
                  f" {opts.window} for {opts.duration:g}s", file=sys.stderr, flush=True)
            out["broadcast_runs"].append(measured("broadcast", [
                "--rooms", str(opts.rooms), "--room-size", "10", "--window", str(opts.window)]))
        out["throughput"] = median_of(out["throughput_runs"], ("msgs_per_s",))
        thr_runs, bc_runs = out["throughput_runs"], out["broadcast_runs"]
        out["summary"] = {
            "msgs_per_s": median(thr_runs, "msgs_per_s"),
            "msgs_per_cpu_s": median(thr_runs, "msgs_per_cpu_s"),
            "broadcast_per_s": median(bc_runs, "msgs_per_s"),
            "broadcast_per_cpu_s": median(bc_runs, "msgs_per_cpu_s"),
            "kb_per_conn": _get(out["idle"], "kb_per_conn"),
            "joins_per_s": _get(out["idle"], "joins_per_s"),
        }
        summarize_latency(out, opts)
        out["rss_end_kb"] = rss_kb(pid)
        out["ok"] = True
    except Exception as exc:
        print(f"   {name} failed: {exc}", file=sys.stderr, flush=True)
        out["ok"] = False
        out["error"] = str(exc)
    finally:
        if proc is not None:
            procs.stop(proc)
    return out


def summarize_latency(out: dict[str, Any], opts: argparse.Namespace) -> None:
    lat_runs = out["latency_runs"]
    out["latency"] = (median_of(lat_runs[opts.rates[0]], ("latency_ms", "p99"))
                      if opts.rates and lat_runs[opts.rates[0]] else {})
    for rate in opts.rates:
        out["summary"][f"p50_ms@{rate:g}"] = median(lat_runs[rate], "latency_ms", "p50")
        out["summary"][f"p99_ms@{rate:g}"] = median(lat_runs[rate], "latency_ms", "p99")
        out["summary"][f"cpu_pct@{rate:g}"] = _pct(median(lat_runs[rate], "server_cpu_util"))


def latency_side_by_side(procs: Procs, starts: dict[str, Any], ports: list[int],
                         opts: argparse.Namespace, workdir: Path
                         ) -> dict[str, dict[float, list[dict[str, Any]]]]:
    """Latency runs of both servers, up together (both pinned to the server's core, the
    idle one asleep), taking turns: run i of one right after run i of the other, which
    starts every other round. Low-rate latency here drifts with the machine over
    minutes by more than the servers differ; runs taken in turn see the same drift."""
    servers = [start_server(name, procs, start, port, opts, workdir)
               for (name, start), port in zip(starts.items(), ports, strict=True)]
    runs: dict[str, dict[float, list[dict[str, Any]]]] = {
        s.name: {rate: [] for rate in opts.rates} for s in servers}
    try:
        for i in range(opts.repeat):
            for rate in opts.rates:
                for server in servers if i % 2 == 0 else servers[::-1]:
                    runs[server.name][rate].append(server.latency(rate, i + 1))
    finally:
        for server in servers:
            procs.stop(server.proc)
    return runs


# --------------------------------------------------------------------- report
def _get(d: dict[str, Any] | None, *path: str) -> float | None:
    cur: Any = d
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur if isinstance(cur, (int, float)) else None


def table(ours: dict[str, Any] | None, ref: dict[str, Any] | None, opts: argparse.Namespace
          ) -> str:
    def g(d: dict[str, Any] | None, key: str) -> float | None:
        return _get(d, "summary", key)

    offer = "" if opts.no_deflate else ", deflate offered"
    specs = [
        ("relay throughput (msgs/s)", "msgs_per_s", "{:,.0f}"),
        ("msgs per server CPU-second", "msgs_per_cpu_s", "{:,.0f}"),
        *[(f"p50 latency @ {rate:g} msgs/s (ms)", f"p50_ms@{rate:g}", "{:.2f}")
          for rate in opts.rates],
        *[(f"p99 latency @ {rate:g} msgs/s (ms)", f"p99_ms@{rate:g}", "{:.2f}")
          for rate in opts.rates],
        *[(f"server CPU @ {rate:g} msgs/s (%)", f"cpu_pct@{rate:g}", "{:.1f}")
          for rate in opts.rates],
        ("broadcast deliveries/s (rooms of 10)", "broadcast_per_s", "{:,.0f}"),
        ("broadcast deliveries per server CPU-s", "broadcast_per_cpu_s", "{:,.0f}"),
        (f"connect+join per second (N={opts.conns}{offer})", "joins_per_s", "{:,.0f}"),
        (f"kB per idle connection (N={opts.conns}{offer})", "kb_per_conn", "{:.1f}"),
    ]
    if not opts.no_deflate:
        specs.append((f"kB per idle connection (N={opts.conns}, no deflate offered)",
                      "kb_per_conn_plain", "{:.1f}"))
    rows = [(label, g(ours, key), g(ref, key), fmt) for label, key, fmt in specs
            if g(ours, key) is not None or g(ref, key) is not None]
    head = ("metric", "mikoto-rtc", "reference", "ratio (this/reference)")
    body = []
    for label, a, b, fmt in rows:
        ratio = f"{a / b:.2f}" if a is not None and b else "-"
        body.append((label, fmt.format(a) if a is not None else "-",
                     fmt.format(b) if b is not None else "-", ratio))
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(4)]
    line = "| " + " | ".join("-" * w for w in widths) + " |"

    def fmt_row(r: tuple[str, ...]) -> str:
        cells = (c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        return "| " + " | ".join(cells) + " |"

    return "\n".join([fmt_row(head), line, *[fmt_row(r) for r in body]])


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


def notes(results: list[dict[str, Any]]) -> str:
    out = []
    for r in results:
        if not r.get("ok"):
            out.append(f"- {r['name']}: FAILED: {r.get('error', '?')[:300]}")
            continue
        thr, lat, idle = r["throughput"], r["latency"], r["idle"]
        server_cpu = _pct(thr.get("server_cpu_util")) or 0
        line = (f"- {r['name']}: throughput run: server CPU {server_cpu:.0f}%,"
                f" loadgen CPU {100 * thr.get('loadgen_cpu_in_window', 0):.0f}%,"
                f" ack errors {thr.get('ack_errors')}")
        if lat:
            line += (f"; latency run: sent {lat.get('sent')}, received {lat.get('received')},"
                     f" p99.9 {_fmt(_get(lat, 'latency_ms', 'p999'))} ms,"
                     f" max {_fmt(_get(lat, 'latency_ms', 'max'))} ms")
        if r.get("slice_us") is not None:
            line += f"; scheduler slice {r['slice_us']:g} µs"
        if idle:
            line += (f"; idle: RSS {idle['rss_before_kb'] / 1024:.1f} ->"
                     f" {idle['rss_holding_kb'] / 1024:.1f} MiB for {idle['conns']} conns"
                     f" (setup {idle['setup_s']:.1f}s); permessage-deflate negotiated:"
                     f" {idle.get('deflate_negotiated')}")
        out.append(line)
        if thr.get("runs", 1) > 1:
            spans = [f"throughput {_span(r['throughput_runs'], 0, 'msgs_per_cpu_s')} msgs per"
                     " CPU-s",
                     f"broadcast {_span(r['broadcast_runs'], 0, 'msgs_per_cpu_s')} per CPU-s",
                     *(f"p99 @ {rate:g}/s {_span(rate_runs, 2, 'latency_ms', 'p99')} ms"
                       for rate, rate_runs in r["latency_runs"].items())]
            out.append(f"  {thr['runs']} runs each: " + ", ".join(spans))
        runs = [*r["throughput_runs"], *r["broadcast_runs"],
                *(x for rate_runs in r["latency_runs"].values() for x in rate_runs)]
        noise = [x for r2 in runs
                 for x in [r2.get("steal_cores", 0) + r2.get("other_cores", 0)]]
        if noise and max(noise) > 0.1:
            out.append(f"  noise: up to {max(noise):.2f} cores were stolen or used by other"
                       " processes during a measured window")
        if (thr.get("loadgen_cpu_in_window") or 0) > 0.9 and (
                thr.get("server_cpu_util") or 0) < 0.9:
            out.append(f"  note: the loadgen was near 100% CPU against {r['name']}:"
                       " its throughput is a lower bound; msgs per CPU-second still holds.")
    return "\n".join(out)


def _span(runs: list[dict[str, Any]], digits: int, *key: str) -> str:
    """The lowest and highest of one metric over runs."""
    vals = [v for v in (_get(r, *key) for r in runs) if v is not None]
    return f"{_fmt(min(vals), digits)}-{_fmt(max(vals), digits)}" if vals else "-"


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


# --------------------------------------------------------------------- main
def ensure_node_modules() -> None:
    if (BENCH / "node_modules" / "socket.io" / "package.json").exists() and (
        BENCH / "node_modules" / "socket.io-client" / "package.json"
    ).exists():
        return
    print("relay.py: installing bench/node_modules (npm ci)", file=sys.stderr, flush=True)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH, check=True, timeout=300)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short runs (about 2 minutes in all)")
    ap.add_argument("--hot-path", action="store_true",
                    help="relay and broadcast only, 2 s each (about 30 s in all): the check"
                         " for anyone changing the hot path")
    ap.add_argument("--only", choices=["mikoto", "reference"], help="run one server only")
    ap.add_argument("--pairs", type=int, default=10, help="client pairs (throughput, latency)")
    ap.add_argument("--window", type=int, default=8, help="outstanding acks per sender")
    ap.add_argument("--duration", type=float, help="measured seconds (default 10, quick 3)")
    ap.add_argument("--warmup", type=float, help="seconds before measuring (default 2, quick 1)")
    ap.add_argument("--rates", default="500,2000",
                    help="offered msgs/s for latency, comma-separated (default 500,2000)")
    ap.add_argument("--rooms", type=int, default=4, help="broadcast: rooms of 10 members")
    ap.add_argument("--repeat", type=int, help="latency/throughput runs each (default 3, quick 1)")
    ap.add_argument("--conns", type=int, help="idle connections (default 5000, quick 500)")
    ap.add_argument("--payload", type=int, default=1024, help="approx. signal payload bytes")
    ap.add_argument("--kind", choices=["description", "candidate"], default="description")
    ap.add_argument("--no-deflate", action="store_true",
                    help="loadgen does not offer permessage-deflate (browsers always do)")
    ap.add_argument("--reference-deflate", action="store_true",
                    help="enable permessage-deflate on the reference server (off by default,"
                         " as in socket.io)")
    ap.add_argument("--log-level", default="WARNING", help="mikoto-rtc log level")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--keep-logs", action="store_true", help="keep the temp dir with logs")
    opts = ap.parse_args(argv)
    if opts.hot_path:
        opts.quick = True
        opts.rates = ""
    short = 2 if opts.hot_path else 3
    opts.duration = opts.duration if opts.duration is not None else (short if opts.quick else 10)
    opts.warmup = opts.warmup if opts.warmup is not None else (1 if opts.quick else 2)
    opts.conns = opts.conns if opts.conns is not None else (500 if opts.quick else 5000)
    opts.rates = [float(r) for r in opts.rates.split(",") if r.strip()]
    opts.repeat = max(1, opts.repeat if opts.repeat is not None else (1 if opts.quick else 3))

    if not shutil.which("node"):
        print("relay.py: node not found (Node 20 needed)", file=sys.stderr)
        return 2
    ensure_node_modules()

    # 2 fds per idle connection on each side: raise our soft limit; children inherit it.
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, max(soft, 4 * opts.conns + 1024))
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ImportError, ValueError, OSError):
        pass

    procs = Procs()
    workdir = Path(tempfile.mkdtemp(prefix="mikoto-relay-bench-"))

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    busy = background_load()
    if busy > 0.2:
        print(f"relay.py: warning: {busy:.2f} cores busy or stolen before start;"
              " results will be noisy", file=sys.stderr, flush=True)
    results: list[dict[str, Any]] = []
    try:
        ports = pick_ports(2)
        pinned = bool(pin(SERVER_CPU))
        print(f"relay.py: pinning {'server->CPU0, loadgen->CPU1' if pinned else 'unavailable'};"
              f" logs in {workdir}", file=sys.stderr, flush=True)
        ours = ref = None
        starts = {
            "mikoto-rtc": lambda port: start_mikoto(procs, port, workdir, opts.log_level),
            "reference": lambda port: start_reference(procs, port, workdir,
                                                      opts.reference_deflate),
        }

        together = opts.only is None and bool(opts.rates)

        def bench(name: str, port: int) -> dict[str, Any]:
            out = bench_server(name, procs, starts[name], port, opts, workdir,
                               latency=not together)
            if out.get("ok") and not opts.no_deflate and not opts.hot_path:
                plain = bench_server(name, procs, starts[name], port, opts, workdir,
                                     plain_idle_only=True)
                out["idle_plain"] = plain.get("idle_plain")
                out["summary"]["kb_per_conn_plain"] = _get(plain, "idle_plain", "kb_per_conn")
                if not plain.get("ok"):
                    out.update(ok=False, error=plain.get("error"))
            return out

        if opts.only in (None, "mikoto"):
            ours = bench("mikoto-rtc", ports[0])
            results.append(ours)
        if opts.only in (None, "reference"):
            ref = bench("reference", ports[1])
            results.append(ref)
        if together and all(r.get("ok") for r in results):
            print("== latency, both servers taking turns", file=sys.stderr, flush=True)
            both = latency_side_by_side(procs, starts, ports, opts, workdir)
            for out in results:
                out["latency_runs"] = both[out["name"]]
                summarize_latency(out, opts)

        print()
        print(f"relay benchmark  {time.strftime('%Y-%m-%d %H:%M')}  "
              f"{os.cpu_count()} CPUs  pairs={opts.pairs} window={opts.window} "
              f"duration={opts.duration:g}s payload={opts.kind}~{opts.payload}B"
              f"{' (hot path)' if opts.hot_path else ' (quick)' if opts.quick else ''}"
              f"  background load {busy:.2f} cores")
        print(table(ours, ref, opts))
        print()
        print(notes(results))
        if opts.json:
            meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "background_cores": busy,
                    "options": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()}}
            opts.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
        return 0 if all(r.get("ok") for r in results) else 1
    except KeyboardInterrupt:
        print("relay.py: interrupted", file=sys.stderr)
        return 130
    finally:
        procs.close()
        if opts.keep_logs or not all(r.get("ok") for r in results):
            print(f"relay.py: logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
