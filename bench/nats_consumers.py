#!/usr/bin/python3
"""nats_consumers.py: what nats-server's JetStream costs per publish
against the number of filtered durable consumers on the stream (design
input for several consumers per node: docs/cluster.md, "What several
consumers per node would cost nats-server"). A measurement of
nats-server alone, not of Wisp, and not a test.

    bench/nats_consumers.py [N ...]      (default: 1 16 64 256 1024)

For each N, three times: a fresh `nats-server -js -sd <tmp>` on a
loopback port, stream P (subjects P.>, interest retention, file storage),
N durable pull consumers filtered on P.c<i>.> (none fetching), then M
(env M, default 20,000) JetStream publishes of 16 bytes, W in flight,
half on P.c0.t (kept: its consumer has not acked them) and half on
P.none.t (no consumer's filter: not kept). Prints nats-server's CPU per
publish (utime + stime from /proc over the publishes) and the rate,
medians of the three. nats-server: WISP_NATS_SERVER or /usr/sbin/nats-server."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

NATS = os.environ.get("WISP_NATS_SERVER", "/usr/sbin/nats-server")
M = int(os.environ.get("M", "20000"))
W = 256


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        f = f.read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""
        self.line()
        self.s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\nSUB _INBOX.p.* 1\r\n')

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(1 << 16)
            if not d:
                raise SystemExit("closed")
            self.buf += d
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l

    def msg(self):
        while True:
            l = self.line()
            if l == b"PING":
                self.s.sendall(b"PONG\r\n")
                continue
            if l.startswith(b"-ERR"):
                raise SystemExit(l)
            if l.startswith(b"MSG "):
                n = int(l.split()[-1])
                while len(self.buf) < n + 2:
                    self.buf += self.s.recv(1 << 16)
                d, self.buf = self.buf[:n], self.buf[n + 2:]
                return d

    def request(self, subject, body):
        b = json.dumps(body).encode()
        self.s.sendall(b"PUB %s _INBOX.p.r %d\r\n%s\r\n" % (subject.encode(), len(b), b))
        r = json.loads(self.msg())
        if "error" in r:
            raise SystemExit("%s: %s" % (subject, r))
        return r


def run(n):
    tmp = tempfile.mkdtemp()
    port = free_port()
    p = subprocess.Popen([NATS, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", tmp],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        c = None
        for _ in range(100):
            try:
                c = Conn(port)
                break
            except OSError:
                time.sleep(0.05)
        if c is None:
            raise SystemExit("nats-server did not start on port %d" % port)
        c.request("$JS.API.STREAM.CREATE.P", {"name": "P", "subjects": ["P.>"], "retention": "interest",
                                              "storage": "file"})
        for i in range(n):
            c.request("$JS.API.CONSUMER.DURABLE.CREATE.P.c%d" % i,
                      {"stream_name": "P", "config": {"durable_name": "c%d" % i, "filter_subject": "P.c%d.>" % i,
                                                      "ack_policy": "explicit", "deliver_policy": "all"}})
        time.sleep(0.5)
        t0, w0 = ticks(p.pid), time.monotonic()
        sent = acked = 0
        deadline = time.monotonic() + 120
        while acked < M:
            if time.monotonic() > deadline:
                raise SystemExit("publishes not acked within 120 s")
            out = []
            while sent < M and sent - acked < W:
                subj = b"P.c0.t" if sent % 2 == 0 else b"P.none.t"
                out.append(b"PUB %s _INBOX.p.a 16\r\n0123456789abcdef\r\n" % subj)
                sent += 1
            if out:
                c.s.sendall(b"".join(out))
            r = c.msg()
            if b'"error"' in r:
                raise SystemExit(r)
            acked += 1
        t1, w1 = ticks(p.pid), time.monotonic()
        hz = os.sysconf("SC_CLK_TCK")
        info = c.request("$JS.API.STREAM.INFO.P", {})
        return (t1 - t0) / hz * 1e6 / M, M / (w1 - w0), info["state"]["messages"]
    finally:
        p.terminate()
        p.wait()
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    print("date %s, nats-server %s, M=%d publishes (half kept by c0, half matching no consumer), window %d"
          % (time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             subprocess.run([NATS, "--version"], capture_output=True, text=True).stdout.strip(), M, W))
    for n in [int(x) for x in (sys.argv[1:] or ["1", "16", "64", "256", "1024"])]:
        r = [run(n) for _ in range(3)]
        r.sort()
        print("consumers %5d: nats-server CPU %.1f us/publish (runs %s), %.0f publishes/s, stored %d" % (
            n, r[1][0], " ".join("%.1f" % x[0] for x in r), r[1][1], r[1][2]))
