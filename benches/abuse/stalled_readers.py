#!/usr/bin/env python3
"""Kernel memory of stream sockets whose readers never read.

Opens READERS `GET /events` streams that never read a byte, publishes RATE events of SIZE bytes
per second on the broadcast channel for SECONDS, and samples once a second: the server's socket
send queues (`ss -tmn`, sum of `w` = queued bytes and `tb` = send buffer over sockets whose
local port is the server's), the kernel's TCP memory (`/proc/net/sockstat`, pages) and the
stalled streams still open (`/stats`). Bounded in count and time; loopback only.

    python3 benches/abuse/stalled_readers.py --port 3000 [--readers 500] [--seconds 15]

Start the server first, e.g. `target/release/sluice --listen 127.0.0.1:3000 --workers 2`
(add `--send-buffer 0 --write-timeout 1h` for the uncapped baseline).
"""
import argparse, json, re, socket, subprocess, time, http.client

def sockstat_pages():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                return int(re.search(r"mem (\d+)", line).group(1))
    return 0

def server_skmem(port):
    out = subprocess.run(["ss", "-tmnH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True).stdout
    queued = bufs = count = 0
    for m in re.finditer(r"skmem:\(([^)]*)\)", out):
        fields = dict(re.findall(r"([a-z_]+)(\d+)", m.group(1)))
        queued += int(fields.get("w", 0))
        bufs += int(fields.get("tb", 0))
        count += 1
    return count, queued, bufs

def stats(port):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    c.request("GET", "/stats")
    s = json.loads(c.getresponse().read())
    c.close()
    return s

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=3000)
    ap.add_argument("--readers", type=int, default=500)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--size", type=int, default=1024)
    a = ap.parse_args()
    base_pages = sockstat_pages()
    readers = []
    for _ in range(a.readers):
        s = socket.create_connection(("127.0.0.1", a.port))
        s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        readers.append(s)
    time.sleep(1)
    pub = http.client.HTTPConnection("127.0.0.1", a.port, timeout=5)
    body = json.dumps({"channel": "broadcast", "data": "x" * a.size})
    peak = (0, 0, 0, 0)
    start = time.time()
    sent = 0
    print("t_s  open_streams  server_sockets  send_queued_MiB  send_buf_MiB  tcp_mem_MiB")
    next_report = start
    while time.time() - start < a.seconds:
        target = int((time.time() - start) * a.rate)
        while sent < target:
            pub.request("POST", "/api/publish", body, {"Content-Type": "application/json"})
            pub.getresponse().read()
            sent += 1
        if time.time() >= next_report:
            count, queued, bufs = server_skmem(a.port)
            pages = sockstat_pages() - base_pages
            open_streams = stats(a.port)["totalConnections"]
            print(f"{time.time()-start:4.0f}  {open_streams:12d}  {count:14d}  {queued/2**20:15.1f}"
                  f"  {bufs/2**20:12.1f}  {pages*4096/2**20:11.1f}", flush=True)
            if queued > peak[1]:
                peak = (count, queued, bufs, pages)
            next_report += 1
        time.sleep(0.005)
    count, queued, bufs, pages = peak
    per = queued / max(count, 1) / 1024
    print(f"peak: {queued/2**20:.1f} MiB queued over {count} sockets ({per:.0f} KiB each), "
          f"send buffers {bufs/2**20:.1f} MiB, TCP memory +{pages*4096/2**20:.1f} MiB; "
          f"{sent} events published")
    for s in readers:
        s.close()

if __name__ == "__main__":
    main()
