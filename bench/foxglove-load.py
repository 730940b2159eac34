#!/usr/bin/env python3
"""The same robot traffic into the hub's ingest or into the Foxglove SDK's own WebSocket server,
paced alike: ROBOTS robots' IMU at RATE Hz and CAMERAS of them sending a 640x480 JPEG at FPS.

    foxglove-load.py hub HOST:PORT SECS FRAME.jpg     # JSON lines to `socketeer hub` (--no-auth)
    foxglove-load.py sdk PORT SECS FRAME.jpg          # foxglove-sdk's server on 127.0.0.1:PORT

Messages carry their send time (the hub's record `ts`; the SDK's `log_time`), so a client can
tell how long each took to reach it. Prints nothing; runs SECS seconds.
"""
import base64
import json
import os
import socket
import sys
import threading
import time

ROBOTS = int(os.environ.get("ROBOTS", "20"))
RATE = float(os.environ.get("RATE", "50"))
CAMERAS = int(os.environ.get("CAMERAS", "8"))
FPS = float(os.environ.get("FPS", "15"))


def schedule(secs, tick):
    """Calls tick(k, now) RATE times a second for secs seconds, catching up if late."""
    start = time.time()
    k = 0
    while True:
        now = time.time()
        if now - start >= secs:
            return
        due = start + k / RATE
        if now < due:
            time.sleep(due - now)
            continue
        tick(k, time.time())
        k += 1


def hub(address, secs, picture):
    host, port = address.rsplit(":", 1)
    links = []
    for r in range(ROBOTS):
        s = socket.create_connection((host, int(port)))
        s.sendall(json.dumps({"device": f"robot-{r}"}).encode() + b"\n")
        # Answers (acknowledgements) are read and dropped.
        threading.Thread(target=lambda s=s: [None for _ in iter(lambda: s.recv(65536), b"")], daemon=True).start()
        links.append(s)
    every = max(1, round(RATE / FPS))

    def tick(k, now):
        for r, s in enumerate(links):
            out = b'{"stream":"imu","ts":%.6f,"values":{"ax":%.4f,"ay":0.1,"az":9.81,"gz":0.01}}\n' % (now, (k % 100) / 100)
            if r < CAMERAS and k % every == 0:
                head = {"stream": "camera", "ts": round(now, 6), "frame": {"w": 640, "h": 480},
                        "image": {"format": "jpeg", "bytes": len(picture)}}
                out += json.dumps(head).encode() + b"\n" + picture
            s.sendall(out)

    schedule(secs, tick)


def sdk(port, secs, picture):
    import foxglove

    server = foxglove.start_server(port=int(port), message_backlog_size=1024)
    imu_schema = {"type": "object", "properties": {k: {"type": "number"} for k in ("ax", "ay", "az", "gz")}}
    image_schema = {"type": "object", "title": "foxglove.CompressedImage", "properties": {
        "timestamp": {"type": "object"}, "frame_id": {"type": "string"},
        "data": {"type": "string", "contentEncoding": "base64"}, "format": {"type": "string"}}}
    imus = [foxglove.Channel(f"/robot-{r}/imu", schema=imu_schema, message_encoding="json") for r in range(ROBOTS)]
    cams = [foxglove.Channel(f"/robot-{r}/camera/image", schema=image_schema, message_encoding="json")
            for r in range(CAMERAS)]
    data = base64.b64encode(picture).decode()
    every = max(1, round(RATE / FPS))

    def tick(k, now):
        ns = int(now * 1e9)
        for ch in imus:
            ch.log(b'{"ax":%.4f,"ay":0.1,"az":9.81,"gz":0.01}' % ((k % 100) / 100), log_time=ns)
        if k % every == 0:
            stamp = {"sec": ns // 10**9, "nsec": ns % 10**9}
            for r, ch in enumerate(cams):
                message = json.dumps({"timestamp": stamp, "frame_id": "camera", "data": data, "format": "jpeg"})
                ch.log(message.encode(), log_time=ns)

    print("ready", flush=True)
    schedule(secs, tick)
    server.stop()


if __name__ == "__main__":
    mode, where, secs, frame = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    record = open(frame, "rb").read()
    picture = record[record.index(b"\n") + 1:] if record.startswith(b"{") else record
    (hub if mode == "hub" else sdk)(where, secs, picture)
