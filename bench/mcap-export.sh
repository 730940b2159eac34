#!/usr/bin/env bash
# MCAP export speed and memory: a hub database holding one hour of a ROBOTS-robot fleet (IMU at
# RATE Hz, battery and temperature at 1 Hz, camera detections at FPS frames/s without pictures,
# and PICS pictures of ~38 KB per robot spread over the hour), filled through `socketeer
# publish` into a release hub, then `socketeer export` of the whole hour, of all of it with
# lz4, and of one minute. Prints MB/s written and peak memory (max RSS) as FIGURE lines.
# Loopback only; bounded by its input.
#
#   bench/mcap-export.sh            # ROBOTS=20 RATE=50 FPS=5 PICS=100
#   DB=/tmp/fleet.db bench/mcap-export.sh   # keep the database there; reuse it if it exists
set -euo pipefail
cd "$(dirname "$0")/.."
ROBOTS=${ROBOTS:-20}
RATE=${RATE:-50}
FPS=${FPS:-5}
PICS=${PICS:-100}
cargo build --release -q -p socketeer-cli --bin socketeer -p socketeer-scene --example frames
bin=$PWD/target/release/socketeer
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

db=${DB:-$work/fleet.db}
if [ ! -s "$db" ]; then
echo "generating one hour of $ROBOTS robots ..." >&2
# One camera record from the scene (a header line, then its JPEG): the JPEG is the picture.
target/release/examples/frames 1 > "$work/frame.rec"
python3 - "$work" "$ROBOTS" "$RATE" "$FPS" "$PICS" <<'EOF'
import json, math, os, sys
work, robots, rate, fps, pics = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
start = 1_800_000_000.0
record = open(os.path.join(work, "frame.rec"), "rb").read()
picture = record[record.index(b"\n") + 1:]
for r in range(robots):
    with open(os.path.join(work, f"robot-{r}.in"), "wb") as out:
        steps = 3600 * rate
        every_frame = max(1, rate // fps)
        every_pic = max(1, steps // max(pics, 1))
        for k in range(steps):
            t = start + k / rate
            out.write(b'{"stream":"imu","ts":%.3f,"values":{"ax":%.4f,"ay":%.4f,"az":%.4f,"gz":%.4f}}\n'
                      % (t, math.sin(k * 0.01), math.cos(k * 0.01), 9.81, 0.1))
            if k % rate == 0:
                out.write(b'{"stream":"battery","ts":%.3f,"values":{"percent":%.2f,"volts":%.3f}}\n' % (t, 90 - k / steps, 24.0))
                out.write(b'{"stream":"temperature","ts":%.3f,"values":{"motor_c":%.2f}}\n' % (t, 35.0))
            if k % every_frame == 0:
                boxes = [{"label": "person", "score": 0.9, "box": [k % 500, 100, 80, 120]}]
                if picture and k % every_pic == 0:
                    head = {"stream": "camera", "ts": round(t, 3), "frame": {"w": 640, "h": 480}, "detections": boxes,
                            "image": {"format": "jpeg", "bytes": len(picture)}}
                    out.write(json.dumps(head).encode() + b"\n" + picture)
                else:
                    out.write(json.dumps({"stream": "camera", "ts": round(t, 3), "frame": {"w": 640, "h": 480},
                                          "detections": boxes}).encode() + b"\n")
EOF
# A key per robot: the hub names each robot's records by the key it authenticated with.
for r in $(seq 0 $((ROBOTS - 1))); do "$bin" keygen --device "robot-$r" >> "$work/devices.key"; done
chmod 600 "$work/devices.key"
"$bin" hub --key-file "$work/devices.key" --listen 127.0.0.1:0 --no-http --no-influx \
  --db "$db" --sync normal > "$work/hub.out" 2> "$work/hub.err" &
hub=$!
pids+=("$hub")
until grep -q '^listening on' "$work/hub.out" 2>/dev/null; do
  kill -0 "$hub" || { cat "$work/hub.err"; exit 1; }
  sleep 0.05
done
ingest=$(grep -m1 -o 'tcp://[0-9.:]*' "$work/hub.out")
echo "publishing ..." >&2
pubs=()
for r in $(seq 0 $((ROBOTS - 1))); do
  "$bin" publish "$ingest" --key-file "$work/devices.key" --device "robot-$r" \
    --file "$work/robot-$r.in" 2> "$work/publish-$r.err" &
  pubs+=($!)
done
for p in "${pubs[@]}"; do wait "$p" || { cat "$work"/publish-*.err >&2; exit 1; }; done
kill "$hub"; wait "$hub" 2>/dev/null || true
pids=()
fi
echo "FIGURE database=$(du -m "$db" | cut -f1) MB"

run() { # NAME ARGS...: one export, timed, its peak memory
  local name=$1; shift
  /usr/bin/time -f '%M %e' -o "$work/time" "$bin" export --db "$db" -o "$work/out.mcap" "$@" 2> "$work/err"
  read -r kib secs < "$work/time"
  local mb
  mb=$(du -m "$work/out.mcap" | cut -f1)
  echo "FIGURE mcap_$name: $(tail -1 "$work/err" | sed 's/^socketeer: export: //'); peak RSS $((kib / 1024)) MiB"
}
run hour_zstd
run hour_lz4 --compression lz4
run hour_none --compression none
run minute_zstd --from 1800001800 --to 1800001860
run one_robot_hour_zstd --device robot-0
