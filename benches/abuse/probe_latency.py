#!/usr/bin/env python3
"""Delivery latency seen by healthy readers, to compare a quiet server with one under abuse.

READERS streams read `GET /events?channel=probe`; one publisher sends RATE events per second for
SECONDS, each carrying its send time; every reader records publish-to-receive latency. Prints
p50 / p99 / max over all deliveries. Run it alone, then again while publish_flood.py,
stalled_readers.py and channel_list.py run against the same server.

    python3 benches/abuse/probe_latency.py --port 3000 [--readers 20] [--rate 20] [--seconds 20]
"""
import argparse, json, socket, threading, time, http.client

def reader(port, out, stop):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /events?channel=probe HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(0.5)
    buf = b""
    while not stop.is_set():
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        now = time.time()
        buf += chunk
        while b'"sent":' in buf:
            i = buf.index(b'"sent":') + 7
            j = i
            while j < len(buf) and (buf[j:j+1].isdigit() or buf[j:j+1] == b"."):
                j += 1
            if j >= len(buf):
                break
            out.append(now - float(buf[i:j]))
            buf = buf[j:]
    s.close()

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=3000)
    ap.add_argument("--readers", type=int, default=20)
    ap.add_argument("--rate", type=int, default=20)
    ap.add_argument("--seconds", type=int, default=20)
    a = ap.parse_args()
    out, stop = [], threading.Event()
    threads = [threading.Thread(target=reader, args=(a.port, out, stop)) for _ in range(a.readers)]
    for t in threads:
        t.start()
    time.sleep(1)
    pub = http.client.HTTPConnection("127.0.0.1", a.port, timeout=10)
    start = time.time()
    n = 0
    while time.time() - start < a.seconds:
        pub.request("POST", "/api/publish",
                    json.dumps({"channel": "probe", "data": {"sent": time.time()}}),
                    {"Content-Type": "application/json"})
        pub.getresponse().read()
        n += 1
        time.sleep(max(0.0, start + n / a.rate - time.time()))
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    lat = sorted(x * 1000 for x in out)
    if not lat:
        print("no deliveries")
        return
    pct = lambda p: lat[min(len(lat) - 1, int(p / 100 * len(lat)))]
    print(f"{len(lat)} deliveries of {n} events to {a.readers} readers: "
          f"p50 {pct(50):.2f} ms, p99 {pct(99):.2f} ms, max {lat[-1]:.2f} ms")

if __name__ == "__main__":
    main()
