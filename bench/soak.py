"""Soak and fault scenarios against `socketeer serve echo` and the anchors, on loopback.

Each scenario starts the servers itself, prints `FIGURE name=value unit (detail)` lines, and
ends every process it started. Usage (bench/soak.sh builds the binaries first):

    python3 bench/soak.py all|slowloris|drain|fds|cycles

Environment: N_SLOW (1000 trickling connections), N_DRAIN (1000 clients), N_CYCLES (10000),
SECS (seconds of load per phase, 10).
"""
import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOCKETEER = os.path.join(ROOT, "target/release/socketeer")
TOKIO = os.path.join(ROOT, "target/release/examples/baseline_tokio_echo")
THREADING = [sys.executable, os.path.join(ROOT, "bench/anchors/threading_echo.py")]
N_SLOW = int(os.environ.get("N_SLOW", 1000))
N_DRAIN = int(os.environ.get("N_DRAIN", 1000))
N_CYCLES = int(os.environ.get("N_CYCLES", 10000))
SECS = float(os.environ.get("SECS", 10))
LINE = b"x" * 63 + b"\n"  # one 64-byte request; the echo server answers it whole


def figure(name, value, unit="", detail=""):
    print(f"FIGURE {name}={value} {unit}".rstrip() + (f" ({detail})" if detail else ""), flush=True)


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Server:
    """A server process on 127.0.0.1:0; its endpoint is read from its `listening on` line."""

    def __init__(self, name, argv, fd_limit=None):
        def limit():
            if fd_limit:
                resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

        self.name = name
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     preexec_fn=limit, text=True)
        deadline = time.monotonic() + 20
        for line in self.proc.stdout:
            if line.startswith("listening on tcp://"):
                host, port = line.strip().removeprefix("listening on tcp://").rsplit(":", 1)
                self.addr = (host, int(port))
                break
            if time.monotonic() > deadline:
                break
        else:
            raise RuntimeError(f"{name} did not start")

    @property
    def pid(self):
        return self.proc.pid

    def cpu_secs(self):
        fields = open(f"/proc/{self.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self):
        for line in open(f"/proc/{self.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def fds(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.kill()
        self.proc.wait()


def socketeer(*extra, fd_limit=None):
    return Server("socketeer", [SOCKETEER, "-q", "serve", "echo", "--lines", "--listen",
                                "127.0.0.1:0", *extra], fd_limit)


def tokio(fd_limit=None):
    return Server("tokio", [TOKIO, "127.0.0.1:0"], fd_limit)


def threading_anchor(fd_limit=None):
    return Server("threading", THREADING, fd_limit)


def round_trip(sock):
    sock.sendall(LINE)
    got = 0
    while got < len(LINE):
        chunk = sock.recv(len(LINE) - got)
        if not chunk:
            raise ConnectionError("closed mid-reply")
        got += len(chunk)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def latency(addr, secs):
    """A real client for `secs`: round trips on one connection, and fresh connect + echo."""
    kept, fresh = [], []
    sock = socket.create_connection(addr, timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    end = time.monotonic() + secs
    while time.monotonic() < end:
        t = time.perf_counter()
        round_trip(sock)
        kept.append((time.perf_counter() - t) * 1000)
        if len(kept) % 20 == 0:
            t = time.perf_counter()
            with socket.create_connection(addr, timeout=5) as f:
                round_trip(f)
            fresh.append((time.perf_counter() - t) * 1000)
        time.sleep(0.002)
    sock.close()
    return kept, fresh


# ---- child processes (asyncio load) --------------------------------------------------------

async def trickle(host, port, n, secs):
    """n connections each sending one byte a second (never a whole line); reports how many are
    still open at the end."""
    conns = []
    for _ in range(n):
        try:
            conns.append(await asyncio.open_connection(host, port))
        except OSError:
            pass
    print(json.dumps({"opened": len(conns)}), flush=True)

    async def drip(reader, writer):
        end = time.monotonic() + secs
        try:
            while time.monotonic() < end:
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(1)
            return True
        except OSError:
            return False

    alive = await asyncio.gather(*(drip(r, w) for r, w in conns))
    for _, w in conns:
        w.close()
    print(json.dumps({"open_at_end": sum(alive)}), flush=True)


async def pingpong(host, port, n):
    """n clients doing round trips until the server closes them; reports how each ended."""
    stats = {"round_trips": 0, "truncated": 0, "unanswered": 0, "reset": 0, "connected": 0}
    started = asyncio.Event()
    ready = 0

    async def client():
        nonlocal ready
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            return
        stats["connected"] += 1
        first = True
        try:
            while True:
                writer.write(LINE)
                got = b""
                try:
                    got = await reader.readexactly(len(LINE))
                except asyncio.IncompleteReadError as err:
                    got = err.partial
                    stats["truncated" if got else "unanswered"] += 1
                    return
                if got != LINE:
                    stats["truncated"] += 1
                    return
                stats["round_trips"] += 1
                if first:
                    first = False
                    ready += 1
                    if ready == n:
                        started.set()
        except (ConnectionResetError, BrokenPipeError):
            stats["reset"] += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(client()) for _ in range(n)]
    await asyncio.wait_for(started.wait(), 60)
    print(json.dumps({"ready": ready}), flush=True)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    print(json.dumps(stats), flush=True)


def child(kind, *args):
    return subprocess.Popen([sys.executable, __file__, "--child", kind, *map(str, args)],
                            stdout=subprocess.PIPE, text=True)


def read_json(proc):
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError("the load process ended early")
    return json.loads(line)


# ---- scenarios -----------------------------------------------------------------------------

def slowloris():
    for make in (socketeer, tokio, threading_anchor):
        server = make()
        try:
            kept, fresh = latency(server.addr, 3)
            figure(f"slowloris_{server.name}_baseline_p99", f"{pct(kept, 0.99):.2f}", "ms",
                   f"one client's round trip alone, p50 {pct(kept, 0.5):.2f} ms")
            load = child("trickle", *server.addr, N_SLOW, SECS + 5)
            opened = read_json(load)["opened"]
            cpu0 = server.cpu_secs()
            kept, fresh = latency(server.addr, SECS)
            cpu = (server.cpu_secs() - cpu0) / SECS * 100
            end = read_json(load)
            load.wait()
            figure(f"slowloris_{server.name}_p99", f"{pct(kept, 0.99):.2f}", "ms",
                   f"one client's round trip beside {opened} connections trickling a byte a second; "
                   f"p50 {pct(kept, 0.5):.2f} ms, fresh connect+echo p99 {pct(fresh, 0.99):.2f} ms, "
                   f"server CPU {cpu:.0f}%, RSS {server.rss_kib() // 1024} MiB, "
                   f"{end['open_at_end']} trickling connections still open")
        finally:
            server.stop()


def drain():
    grace = 5
    server = socketeer("--grace", str(grace), "--max-conns", str(N_DRAIN + 100))
    try:
        load = child("pingpong", *server.addr, N_DRAIN)
        ready = read_json(load)["ready"]
        time.sleep(2)  # two seconds of full load before the signal (a load window)
        t = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=grace + 10)
        exited = time.monotonic() - t
        stats = read_json(load)
        load.wait()
        figure("drain_exit_secs", f"{exited:.2f}", "s",
               f"SIGTERM with {ready} clients mid round trips; grace {grace} s; exit status {code}")
        figure("drain_truncated_replies", stats["truncated"], "",
               f"{stats['round_trips']} complete round trips; {stats['unanswered']} requests sent "
               f"after the server closed that connection at a message boundary; "
               f"{stats['reset']} resets")
    finally:
        server.stop()


def fds():
    limit, n = 256, 400
    for make in (socketeer, tokio, threading_anchor):
        server = make(fd_limit=limit)
        held = []
        try:
            base_fds = server.fds()
            for _ in range(n):
                try:
                    s = socket.create_connection(server.addr, timeout=5)
                    s.sendall(LINE)
                except OSError:
                    break  # the server is gone: reported below
                held.append(s)
            time.sleep(1)  # let the server reach its limit (a measurement window)
            cpu0 = server.cpu_secs()
            time.sleep(3)
            cpu = (server.cpu_secs() - cpu0) / 3 * 100
            if not server.alive():
                figure(f"fds_{server.name}_survived", 0, "",
                       f"exited with status {server.proc.returncode} on running out of descriptors "
                       f"(ulimit -n {limit}; connection {len(held) + 1} of {n} was refused)")
                continue
            answered_before = sum(1 for s in held if ready_to_read(s))
            # Free half: the accepted ones close, and the backlog must now be served.
            t = time.monotonic()
            for s in held[:n // 2]:
                s.close()
            rest = held[n // 2:]
            answered = wait_answered(rest, 10)
            resumed = time.monotonic() - t
            figure(f"fds_{server.name}_cpu_exhausted", f"{cpu:.1f}", "%",
                   f"server CPU while out of descriptors (ulimit -n {limit}, {n} connections, "
                   f"{base_fds} fds at start, {answered_before} answered)")
            figure(f"fds_{server.name}_answered_after_freeing", f"{answered}/{len(rest)}", "",
                   f"in {resumed:.2f} s after closing {n // 2} connections")
        finally:
            for s in held:
                s.close()
            server.stop()


def ready_to_read(sock):
    sock.setblocking(False)
    try:
        return bool(sock.recv(len(LINE), socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)


def wait_answered(socks, secs):
    end = time.monotonic() + secs
    pending = list(socks)
    while pending and time.monotonic() < end:
        pending = [s for s in pending if not ready_to_read(s)]
        time.sleep(0.01)
    return len(socks) - len(pending)


def cycles():
    for make in (socketeer, tokio):
        server = make()
        try:
            def run(count):
                for _ in range(count):
                    with socket.create_connection(server.addr, timeout=5) as s:
                        round_trip(s)

            run(1000)  # warm: allocator pools, runtime workers
            time.sleep(0.5)
            fds0, rss0 = server.fds(), server.rss_kib()
            t = time.monotonic()
            run(N_CYCLES)
            took = time.monotonic() - t
            time.sleep(0.5)  # closes finish (a measurement window)
            fds1, rss1 = server.fds(), server.rss_kib()
            # A second round: a leak grows again, an allocator that has found its size does not.
            run(N_CYCLES)
            time.sleep(0.5)
            fds2, rss2 = server.fds(), server.rss_kib()
            figure(f"cycles_{server.name}_fd_drift", fds2 - fds0, "fds",
                   f"2 x {N_CYCLES} connect/echo/close cycles, {took:.1f} s each; {fds0} -> {fds1} -> {fds2}")
            figure(f"cycles_{server.name}_rss_drift", rss2 - rss1, "KiB",
                   f"in the second {N_CYCLES}; RSS {rss0} -> {rss1} -> {rss2} KiB")
        finally:
            server.stop()


def main():
    if sys.argv[1] == "--child":
        kind, host, port, n, *rest = sys.argv[2:]
        raise_fd_limit()
        if kind == "trickle":
            asyncio.run(trickle(host, int(port), int(n), float(rest[0])))
        else:
            asyncio.run(pingpong(host, int(port), int(n)))
        return
    raise_fd_limit()
    scenarios = {"slowloris": slowloris, "drain": drain, "fds": fds, "cycles": cycles}
    chosen = scenarios if sys.argv[1] == "all" else {sys.argv[1]: scenarios[sys.argv[1]]}
    for run in chosen.values():
        run()


if __name__ == "__main__":
    main()
