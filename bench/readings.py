#!/usr/bin/env python3
"""Readings for the hub benchmarks, one JSON line each (three values, a counter in ax):

    readings.py N          N lines, as fast as they can be written
    readings.py N RATE     N lines paced at RATE lines/s (in batches of a hundredth of a second)
    readings.py summary    reads `socketeer publish --stats` lines on stdin; prints the worst
                           p50, the worst p99 and the sum of acknowledged records
"""
import json
import sys
import time


def line(k):
    return '{"stream":"imu","values":{"ax":%d.25,"ay":-1.5,"az":9.81}}\n' % k


def main(args):
    if args[:1] == ["summary"]:
        rows = [json.loads(l) for l in sys.stdin if l.strip()]
        print(max(r["ack_ms"]["p50"] for r in rows), max(r["ack_ms"]["p99"] for r in rows),
              sum(r["acknowledged"] for r in rows))
        return
    total = int(args[0])
    out = sys.stdout
    if len(args) == 1:
        for k in range(total):
            out.write(line(k))
        return
    rate = int(args[1])
    batch = max(1, rate // 100)
    start = time.monotonic()
    sent = 0
    while sent < total:
        n = min(batch, total - sent)
        out.write("".join(line(sent + i) for i in range(n)))
        out.flush()
        sent += n
        delay = start + sent / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


if __name__ == "__main__":
    main(sys.argv[1:])
