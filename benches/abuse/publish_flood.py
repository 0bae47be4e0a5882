#!/usr/bin/env python3
"""RSS of the server under a flood of large publishes to distinct channels.

Publishes EVENTS events of SIZE bytes, each on its own channel, over one keep-alive connection,
then prints the server's RSS growth (from /proc/PID/status) and what /stats says is retained.

    python3 benches/abuse/publish_flood.py --port 3000 --pid PID [--events 10000] [--size 60000]
"""
import argparse, json, http.client, time

def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=3000)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=60_000)
    a = ap.parse_args()
    before = rss_mib(a.pid)
    c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
    data = "x" * a.size
    codes = {}
    start = time.time()
    for i in range(a.events):
        c.request("POST", "/api/publish", json.dumps({"channel": f"c{i}", "data": data}),
                  {"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        codes[r.status] = codes.get(r.status, 0) + 1
    took = time.time() - start
    c.request("GET", "/stats")
    s = json.loads(c.getresponse().read())
    after = rss_mib(a.pid)
    print(f"{a.events} x {a.size} B in {took:.1f} s, answers {codes}")
    print(f"RSS {before:.0f} -> {after:.0f} MiB (+{after-before:.0f}); retained "
          f"{s['retainedBytes']/2**20:.0f} MiB of {s['memoryBudget']/2**20:.0f} MiB budget, "
          f"{s['historyEvents']} events, {s['budgetEvictions']} budget evictions")

if __name__ == "__main__":
    main()
