#!/usr/bin/env python3
"""Time etcd's lock service (v3lock) on loopback, for README's comparison table.

Usage: etcd_lock.py ENDPOINT[,ENDPOINT...] [--seconds S]
Talks to etcd's JSON gateway with persistent HTTP connections (stdlib only).
Prints one JSON object: uncontended acquire p50/p99 (one client, lock then
unlock), lock+unlock per second from one client, and with 3 clients contending
for the same lock: entries per second and acquire p50.
"""
import base64
import http.client
import json
import sys
import threading
import time


class Client:
    def __init__(self, endpoint):
        host, port = endpoint.split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.lease = self.call("/v3/lease/grant", {"TTL": 30})["ID"]

    def call(self, path, body):
        self.conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: HTTP {response.status}: {data[:200]!r}")
        return json.loads(data)

    def lock(self, name):
        encoded = base64.b64encode(name.encode()).decode()
        return self.call("/v3/lock/lock", {"name": encoded, "lease": self.lease})["key"]

    def unlock(self, key):
        self.call("/v3/lock/unlock", {"key": key})


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def uncontended(endpoint, seconds):
    client = Client(endpoint)
    acquire = []
    cycles = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        key = client.lock("bench-solo")
        acquire.append(time.perf_counter() - t0)
        client.unlock(key)
        cycles += 1
    return acquire, cycles / seconds


def contended(endpoints, seconds):
    acquire = []
    entries = [0]
    guard = threading.Lock()
    end = time.perf_counter() + seconds

    def worker(endpoint):
        client = Client(endpoint)
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            key = client.lock("bench-shared")
            waited = time.perf_counter() - t0
            client.unlock(key)
            with guard:
                acquire.append(waited)
                entries[0] += 1

    threads = [threading.Thread(target=worker, args=(e,)) for e in endpoints]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return acquire, entries[0] / seconds


def main():
    endpoints = sys.argv[1].split(",")
    seconds = float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 5.0
    solo, cycles_per_s = uncontended(endpoints[0], seconds)
    shared, entries_per_s = contended((endpoints * 3)[:3], seconds)
    print(json.dumps({
        "acquire_p50_us": round(percentile(solo, 0.50) * 1e6),
        "acquire_p99_us": round(percentile(solo, 0.99) * 1e6),
        "lock_unlock_per_s_one_client": round(cycles_per_s),
        "contended_entries_per_s": round(entries_per_s, 1),
        "contended_acquire_p50_us": round(percentile(shared, 0.50) * 1e6),
    }))


if __name__ == "__main__":
    main()
