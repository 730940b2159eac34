"""Table and graph of bench/grid.sh results: round trips/s (MB/s for bulk), p99, and each
server's ratio to the minimal tokio echo at every point.
Usage: python3 bench/grid-report.py bench/results/grid.jsonl   (writes grid.png beside it)"""
import json
import os
import sys

path = sys.argv[1]
rows = [json.loads(line) for line in open(path) if line.strip()]
points = list(dict.fromkeys(r["point"] for r in rows))
servers = list(dict.fromkeys(r["server"] for r in rows))
order = ["socketeer", "tokio", "threading", "asyncio", "socat", "ncat"]
servers.sort(key=lambda s: order.index(s) if s in order else len(order))
res = {(r["server"], r["point"]): r.get("result") for r in rows}


def value(server, point):
    r = res.get((server, point))
    if not r:
        return None
    return r["mb_per_sec"] if point == "bulk" else r["round_trips_per_sec"]


print()
print(f"{'point':<11}" + "".join(f"{s:>14}" for s in servers) + "   (round trips/s; bulk: MB/s)")
for p in points:
    cells = []
    for s in servers:
        v = value(s, p)
        cells.append(f"{'failed':>14}" if v is None else f"{v:>14.0f}")
    print(f"{p:<11}" + "".join(cells))
print()
print(f"{'p99 (ms)':<11}" + "".join(f"{s:>14}" for s in servers))
for p in points:
    if p == "bulk":
        continue
    cells = []
    for s in servers:
        r = res.get((s, p))
        cells.append(f"{'-':>14}" if not r else f"{r['p99_us'] / 1000:>14.2f}")
    print(f"{p:<11}" + "".join(cells))
if "tokio" in servers:
    print()
    print(f"{'x tokio':<11}" + "".join(f"{s:>14}" for s in servers))
    for p in points:
        base = value("tokio", p)
        cells = []
        for s in servers:
            v = value(s, p)
            cells.append(f"{'-':>14}" if v is None or not base else f"{v / base:>14.2f}")
        print(f"{p:<11}" + "".join(cells))
        if "socketeer" in servers and base and value("socketeer", p) is not None:
            print(f"FIGURE ratio_socketeer_to_tokio_{p}={value('socketeer', p) / base:.2f}")

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    print("note: no matplotlib; graph skipped (pip install matplotlib)")
    sys.exit(0)

fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
for ax, size in zip(axes, ("64", "4096")):
    conns = [p for p in points if p.endswith("x" + size)]
    xs = [int(p.split("x")[0]) for p in conns]
    for s in servers:
        ys = [value(s, p) for p in conns]
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        if pts:
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=s,
                    linewidth=2.5 if s == "socketeer" else 1.2)
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_xlabel("connections")
    ax.set_title(f"{size}-byte messages")
    ax.grid(True, alpha=0.3)
axes[0].set_ylabel("round trips / s")
axes[1].legend(loc="best", fontsize=8)
fig.suptitle("echo round trips/s vs connections (same client, same 2-core machine, one run)")
fig.tight_layout()
png = os.path.join(os.path.dirname(path), "grid.png")
fig.savefig(png, dpi=110)
print(f"graph: {png}")
