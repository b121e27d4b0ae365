#!/usr/bin/env python3
# Usage: scripts/forward_latency.py OWNER_PORT FORWARDING_PORT REQUESTS (two cluster nodes on
# 127.0.0.1, every shard on the first; see docs/SCALING.md).
# Forwarding overhead: the same GET /v1/balance/users/U, sequential over one keep-alive
# connection, sent to the wallet's owner and to a node that forwards it there; interleaved
# in blocks so both see the same machine.
import http.client, sys, time, statistics
owner_port, other_port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
conns = {p: http.client.HTTPConnection("127.0.0.1", p) for p in (owner_port, other_port)}
lat = {owner_port: [], other_port: []}
for block in range(n // 100):
    for p in (owner_port, other_port):
        c = conns[p]
        for i in range(100):
            t = time.perf_counter()
            c.request("GET", "/v1/balance/users/%d" % (1 + i % 50))
            r = c.getresponse(); r.read()
            assert r.status == 200, r.status
            lat[p].append((time.perf_counter() - t) * 1000)
for name, p in (("direct to the owner", owner_port), ("forwarded once", other_port)):
    xs = sorted(lat[p])
    q = lambda f: xs[min(len(xs) - 1, int(f * len(xs)))]
    print(f"{name:22s} n={len(xs)} p50={q(0.5):.3f} ms p99={q(0.99):.3f} ms max={xs[-1]:.3f} ms")
