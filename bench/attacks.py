"""The hostile-peer scenarios of issue 20 against `socketeer hub`, on loopback: each attack runs
for SECS while a real robot sends one numbered reading every 10 ms on its own connection and
waits for its acknowledgement. Prints, per scenario, the robot's acknowledgement latency
(p50/p99/max, and readings never acknowledged), the hub's peak memory (VmHWM) and what the hub
counted. Every process started here is ended here; every loop is bounded in time.

    python3 bench/attacks.py all|udp|http|halfopen|cardinality|viewers|handshakes|hog

Environment: HUB_BIN (default target/release/socketeer: another build to compare), SECS (8).
bench/attacks.sh builds the release binary first.
"""
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HUB_BIN = os.environ.get("HUB_BIN", os.path.join(ROOT, "target/release/socketeer"))
SECS = float(os.environ.get("SECS", 8))
MEMORY_CAP_MIB = int(os.environ.get("MEMORY_CAP_MIB", 8192))


def figure(name, value, unit="", detail=""):
    print(f"FIGURE {name}={value} {unit}".rstrip() + (f" ({detail})" if detail else ""), flush=True)


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def has_flag(flag):
    out = subprocess.run([HUB_BIN, "hub", "--help"], capture_output=True, text=True).stdout
    return flag in out


class Hub:
    """A hub on free ports: ingest, Influx over TCP and UDP, HTTP."""

    def __init__(self, *extra, fd_limit=None, key_file=None):
        self.dir = tempfile.mkdtemp(prefix="socketeer-attacks-")
        argv = [HUB_BIN, "-q", "hub", "--db", os.path.join(self.dir, "hub.db"),
                "--listen", "127.0.0.1:0", "--influx", "tcp://127.0.0.1:0",
                "--influx", "udp://127.0.0.1:0", "--http", "127.0.0.1:0", *extra]
        argv += ["--key-file", key_file] if key_file else ["--no-auth"]
        if has_flag("--http-ingest-no-auth") and not key_file:
            argv.append("--http-ingest-no-auth")

        def limit():
            if fd_limit:
                resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, preexec_fn=limit)
        eps = []
        deadline = time.monotonic() + 20
        while len(eps) < 4 and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("listening on "):
                eps.append(line.strip().removeprefix("listening on "))
        if len(eps) < 4:
            raise RuntimeError(f"the hub did not start: {eps}")

        def addr(ep):
            host, port = ep.split("://", 1)[1].rstrip("/").rsplit(":", 1)
            return (host, int(port))

        self.ingest, self.influx_tcp, self.influx_udp, self.http = map(addr, eps)
        self.killed = None
        threading.Thread(target=self.watch, daemon=True).start()

    def watch(self):
        """Ends the hub if it passes MEMORY_CAP (an unbounded build would take the machine)."""
        while self.proc.poll() is None:
            try:
                rss = next(int(l.split()[1]) for l in open(f"/proc/{self.proc.pid}/status")
                           if l.startswith("VmRSS:"))
            except (OSError, StopIteration):
                return
            if rss > MEMORY_CAP_MIB * 1024:
                self.killed = f"killed by the bench at {MEMORY_CAP_MIB} MiB"
                self.proc.kill()
                return
            time.sleep(0.05)

    def url(self, path):
        return f"http://{self.http[0]}:{self.http[1]}{path}"

    def peak_mib(self):
        if self.killed:
            return f">{MEMORY_CAP_MIB} ({self.killed})"
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
        except OSError:
            pass
        return "?"

    def metric(self, name):
        try:
            text = urllib.request.urlopen(self.url("/metrics"), timeout=10).read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return int(float(line.rsplit(" ", 1)[1]))
        return 0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        subprocess.run(["rm", "-rf", self.dir])


class Robot(threading.Thread):
    """One reading every 10 ms, each waited for: the acknowledgement latencies."""

    def __init__(self, hub, secs):
        super().__init__(daemon=True)
        self.hub, self.secs = hub, secs
        self.latencies, self.lost = [], 0

    def run(self):
        try:
            sock = socket.create_connection(self.hub.ingest, timeout=30)
        except OSError:
            self.lost = -1
            return
        reader = sock.makefile("rb")
        sock.sendall(b'{"session":"robot-%d"}\n' % os.getpid())
        end = time.monotonic() + self.secs
        seq = 0
        while time.monotonic() < end:
            seq += 1
            sent = time.monotonic()
            try:
                sock.sendall(b'{"device":"robot-1"}\n' if seq == 1 else b"")
                sock.sendall(b'{"stream":"probe","seq":%d,"values":{"v":%d}}\n' % (seq, seq))
                line = reader.readline()
            except OSError:
                line = b""
            if b'"ack"' not in line:
                self.lost += 1
                if not line:
                    return
                continue
            self.latencies.append((time.monotonic() - sent) * 1000)
            time.sleep(max(0.0, 0.01 - (time.monotonic() - sent)))
        sock.close()

    def report(self, name, hub, detail="", peak=None):
        lat = self.latencies
        peak = hub.peak_mib() if peak is None else peak
        figure(f"attack_{name}_robot_p99", f"{pct(lat, 0.99):.1f}", "ms",
               f"p50 {pct(lat, 0.5):.1f} ms, max {max(lat, default=float('nan')):.1f} ms, "
               f"{len(lat)} acknowledged, {self.lost} not; hub peak {peak} MiB"
               + (f"; {detail}" if detail else ""))


def for_secs(secs, work):
    """Runs `work()` again and again for `secs` (each call bounded by its own timeouts)."""
    end = time.monotonic() + secs
    while time.monotonic() < end:
        try:
            work()
        except OSError:
            time.sleep(0.01)


def drain(sock):
    """Reads and drops what the hub answers, until it closes."""
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def threads(n, target):
    ts = [threading.Thread(target=target, daemon=True) for _ in range(n)]
    for t in ts:
        t.start()
    return ts


def under_attack(hub, attackers):
    """Runs the robot beside the attacker threads, all started now; returns it once all end."""
    robot = Robot(hub, SECS)
    robot.start()
    for t in attackers + [robot]:
        t.join()
    return robot


def baseline():
    hub = Hub()
    try:
        robot = Robot(hub, SECS)
        robot.run()
        robot.report("none", hub, "no attack: the robot alone")
    finally:
        hub.stop()


def udp():
    """Item 2: unauthenticated Influx datagrams of thousands of lines, as fast as 4 threads send."""
    hub = Hub()
    try:
        datagram = b"".join(b"flood,host=f%d v=%d\n" % (k % 100, k) for k in range(2500))[:60000]
        datagram = datagram[:datagram.rfind(b"\n") + 1]

        def flood():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for_secs(SECS, lambda: s.sendto(datagram, hub.influx_udp))

        robot = under_attack(hub, threads(4, flood))
        robot.report("udp_flood", hub, f"influx lines taken {hub.metric('socketeer_hub_influx_lines_total')}, "
                     f"dropped {hub.metric('socketeer_hub_influx_dropped_total')}")
    finally:
        hub.stop()


def seed_frames(hub, frames, detections):
    """`frames` frames of `detections` detections each, acknowledged."""
    sock = socket.create_connection(hub.ingest, timeout=60)
    reader = sock.makefile("rb")
    dets = ",".join('{"label":"l%d","score":0.9,"box":[1,2,3,4]}' % k for k in range(detections))
    for seq in range(1, frames + 1):
        sock.sendall(b'{"stream":"cam","seq":%d,"ts":%d,"frame":{"w":640,"h":480},"detections":[%s]}\n'
                     % (seq, 1_800_000_000 + seq, dets.encode()))
    for _ in range(frames):
        reader.readline()
    sock.close()


def http():
    """Item 3: 8 clients of /api/detections?limit=10000, 8 CSV exports, 8 16 MiB POSTs at once."""
    hub = Hub()
    try:
        seed_frames(hub, 400, 256)
        body = b"".join(b'{"stream":"bulk","values":{"v":%d}}\n' % k
                        for k in range(600_000))[:16 * 1024 * 1024 - 100]
        body = body[:body.rfind(b"\n") + 1]
        dets = hub.url("/api/detections?from=0&to=2000000000&limit=10000")
        csv = hub.url("/api/export.csv?device=unnamed&stream=cam&from=0&to=2000000000")
        post = hub.url("/api/ingest?device=poster")
        done = {"get": 0, "csv": 0, "post": 0, "busy": 0}

        def get(url, kind):
            def once():
                try:
                    urllib.request.urlopen(url, timeout=60).read()
                    done[kind] += 1
                except urllib.error.HTTPError as e:
                    done["busy" if e.code == 503 else kind] += 1
            return lambda: for_secs(SECS, once)

        def poster():
            def once():
                req = urllib.request.Request(post, data=body, method="POST",
                                             headers={"Content-Type": "application/x-ndjson"})
                try:
                    urllib.request.urlopen(req, timeout=120).read()
                    done["post"] += 1
                except urllib.error.HTTPError as e:
                    done["busy" if e.code == 503 else "post"] += 1
            for_secs(SECS, once)

        attackers = threads(8, get(dets, "get")) + threads(8, get(csv, "csv")) + threads(8, poster)
        robot = under_attack(hub, attackers)
        robot.report("http_load", hub, f"answered: {done['get']} detections, {done['csv']} exports, "
                     f"{done['post']} posts, {done['busy']} told 503")
    finally:
        hub.stop()


def halfopen():
    """Item 4: 1,050 half-sent HTTP requests against a hub limited to 1,024 descriptors."""
    # Deadlines far off where the build has them: SIGTERM comes while every request is held.
    extra = ["--http-timeout", "600"] if has_flag("--http-timeout") else []
    hub = Hub("--grace", "2", *extra, fd_limit=1024)
    held = []
    try:
        for _ in range(1050):
            try:
                s = socket.create_connection(hub.http, timeout=5)
                s.sendall(b"GET /api/devices HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                held.append(s)
            except OSError:
                break
        robot = Robot(hub, SECS)
        robot.run()
        peak = hub.peak_mib()
        started = time.monotonic()
        hub.proc.send_signal(signal.SIGTERM)
        try:
            hub.proc.wait(timeout=30)
            stopped = f"exited after {time.monotonic() - started:.1f} s"
        except subprocess.TimeoutExpired:
            stopped = "still running after 30 s"
        robot.report("half_open_http", hub, f"{len(held)} half-sent requests held; SIGTERM "
                     f"with --grace 2: {stopped}", peak=peak)
    finally:
        for s in held:
            s.close()
        hub.stop()


def cardinality():
    """Item 7: one device inventing 60 fields a record, and 100,000 invented Influx devices."""
    hub = Hub()
    try:
        def inventor():
            sock = socket.create_connection(hub.ingest, timeout=30)
            sock.sendall(b'{"device":"inventor"}\n')
            threading.Thread(target=drain, args=(sock,), daemon=True).start()
            n = [0]

            def batch():
                lines = []
                for _ in range(100):
                    n[0] += 1
                    vals = ",".join('"f%d_%d":1' % (n[0], i) for i in range(60))
                    lines.append(b'{"stream":"s%d","values":{%s}}\n' % (n[0] % 1000, vals.encode()))
                sock.sendall(b"".join(lines))
            for_secs(SECS, batch)
            sock.close()

        def influx():
            sock = socket.create_connection(hub.influx_tcp, timeout=30)
            for k in range(0, 100_000, 1000):
                sock.sendall(b"".join(b"cpu,host=inv%d usage=1\n" % i for i in range(k, k + 1000)))
            sock.close()

        robot = under_attack(hub, threads(1, inventor) + threads(1, influx))
        devices = json.load(urllib.request.urlopen(hub.url("/api/devices"), timeout=30))["devices"]
        series = sum(d["series"] for d in devices)
        robot.report("cardinality", hub, f"{len(devices)} devices and {series} series kept; "
                     f"database and its log {db_mib(hub)} MiB")
    finally:
        hub.stop()


def open_sockets(hub):
    """Sockets the hub holds, listeners included (ingest, Influx x2, HTTP: 4)."""
    fd_dir = f"/proc/{hub.proc.pid}/fd"
    count = 0
    for fd in os.listdir(fd_dir):
        try:
            count += os.readlink(os.path.join(fd_dir, fd)).startswith("socket:")
        except OSError:
            pass
    return count - 4


def db_mib(hub):
    paths = [os.path.join(hub.dir, name) for name in ("hub.db", "hub.db-wal")]
    return sum(os.path.getsize(p) for p in paths if os.path.exists(p)) // 2**20


def viewers():
    """Item 8: 60 live viewers that never read, while 20,000 readings a second are stored."""
    hub = Hub()
    held = []
    try:
        for _ in range(60):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(hub.http)
            s.sendall(b"GET /api/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            held.append(s)

        def publisher():
            sock = socket.create_connection(hub.ingest, timeout=30)
            sock.sendall(b'{"device":"fast"}\n')
            values = ",".join('"v%d":%d.5' % (i, i) for i in range(64)).encode()
            batch = b"".join(b'{"stream":"imu","values":{%s}}\n' % values for _ in range(200))

            def send():
                sock.sendall(batch)
                time.sleep(0.01)
            for_secs(SECS, send)
            sock.close()

        robot = under_attack(hub, threads(1, publisher))
        robot.report("stalled_viewers", hub, f"viewers dropped {hub.metric('socketeer_hub_live_viewers_dropped_total')}, "
                     f"connections open at the end {open_sockets(hub)}")
    finally:
        for s in held:
            s.close()
        hub.stop()


def handshakes():
    """Item 9: 16 addresses x 16 stalled handshakes, refilled as they end, against a robot with
    a key connecting afresh every half second (the time to connect, authenticate and be
    acknowledged)."""
    keys = tempfile.mkdtemp(prefix="socketeer-keys-")
    key_file = os.path.join(keys, "fleet.key")
    with open(key_file, "w") as f:
        f.write(subprocess.run([HUB_BIN, "keygen", "--device", "robot-1"], capture_output=True,
                               text=True, check=True).stdout)
    os.chmod(key_file, 0o600)
    hub = Hub(key_file=key_file)
    try:
        stop = time.monotonic() + SECS

        def flooder(source):
            held = []
            while time.monotonic() < stop:
                held = [s for s in held if alive(s)]
                while len(held) < 16 and time.monotonic() < stop:
                    try:
                        s = socket.socket()
                        s.bind((source, 0))
                        s.settimeout(2)
                        s.connect(hub.ingest)
                        held.append(s)
                    except OSError:
                        break
                time.sleep(0.05)
            for s in held:
                s.close()

        ts = [threading.Thread(target=flooder, args=(f"127.0.0.{10 + i}",), daemon=True)
              for i in range(16)]
        for t in ts:
            t.start()
        time.sleep(1)  # let the flood fill every place
        times, failed = [], 0
        ep = f"tcp://{hub.ingest[0]}:{hub.ingest[1]}"
        while time.monotonic() < stop:
            started = time.monotonic()
            r = subprocess.run([HUB_BIN, "-q", "publish", "--key-file", key_file, "--device",
                                "robot-1", ep], input=b'{"stream":"probe","values":{"v":1}}\n',
                               capture_output=True, timeout=30)
            if r.returncode == 0:
                times.append((time.monotonic() - started) * 1000)
            else:
                failed += 1
            time.sleep(0.5)
        for t in ts:
            t.join()
        figure("attack_handshake_flood_robot_connect_p50", f"{pct(times, 0.5):.1f}", "ms",
               f"max {max(times, default=float('nan')):.1f} ms; {len(times)} connections got in, "
               f"{failed} did not; hub peak {hub.peak_mib()} MiB")
    finally:
        hub.stop()
        subprocess.run(["rm", "-rf", keys])


def alive(sock):
    try:
        sock.setblocking(False)
        return sock.recv(64, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def hog():
    """Item 10: eight connections of one device pipelining records of 64 readings each."""
    hub = Hub()
    try:
        record = ",".join('"v%d":%d' % (i, i) for i in range(64)).encode()
        batch = b"".join(b'{"stream":"big","values":{%s}}\n' % record for _ in range(100))

        def hogger():
            sock = socket.create_connection(hub.ingest, timeout=30)
            sock.sendall(b'{"device":"hog"}\n')
            threading.Thread(target=drain, args=(sock,), daemon=True).start()
            for_secs(SECS, lambda: sock.sendall(batch))
            sock.close()

        robot = under_attack(hub, threads(8, hogger))
        robot.report("writer_hog", hub, f"records stored {hub.metric('socketeer_hub_records_total')}")
    finally:
        hub.stop()


SCENARIOS = {"none": baseline, "udp": udp, "http": http, "halfopen": halfopen,
             "cardinality": cardinality, "viewers": viewers, "handshakes": handshakes, "hog": hog}

if __name__ == "__main__":
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    print(f"# {HUB_BIN}", flush=True)
    for name, run in SCENARIOS.items():
        if which in ("all", name):
            run()
