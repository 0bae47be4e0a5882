#!/usr/bin/env python3
"""Server-side cost of refusing `GET /events?channel=<N names>` against N.

Sends REQUESTS requests per list length over keep-alive connections and prints the mean time per
request; every list here is over the 64-channel cap, so each answer is a 400.

    python3 benches/abuse/channel_list.py --port 3000 [--requests 200]
"""
import argparse, socket, time

def one(port, target):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.split(b" ", 2)[1]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=3000)
    ap.add_argument("--requests", type=int, default=200)
    a = ap.parse_args()
    base = None
    print("names  status  mean_ms  vs_65")
    for n in (65, 750, 3000, 12000):
        target = "/events?channel=" + ",".join(format(i, "x") for i in range(n))
        start = time.perf_counter()
        for _ in range(a.requests):
            status = one(a.port, target)
        ms = (time.perf_counter() - start) * 1000 / a.requests
        base = base or ms
        print(f"{n:5d}  {status.decode():6s}  {ms:7.3f}  {ms/base:5.2f}x")

if __name__ == "__main__":
    main()
