#!/usr/bin/python3
"""Start-up time and memory of a broker that must restore a large store.

  bench/persist_startup.py WISP [--sessions 10000] [--messages 1000000]

Starts WISP on a fresh data directory (fsync "no": this measures the
restore, not the disk), makes SESSIONS persistent subscribers (clean
session 0, one topic each) that disconnect, publishes MESSAGES QoS 1
messages spread evenly over their topics, stops the broker, then starts it
again and reports how long it took until it accepted connections, its RSS
once up, and the size of the store. Loopback only; bounded by the counts.
"""
import argparse
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def s16(b):
    return len(b).to_bytes(2, "big") + b


def connect(cid, clean):
    flags = 0x02 if clean else 0
    return packet(0x10, s16(b"MQTT") + bytes([4, flags]) + (0).to_bytes(2, "big") + s16(cid))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, proc, timeout=120):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit("broker exited with %s" % proc.returncode)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return time.monotonic() - t0
        except OSError:
            time.sleep(0.01)
    raise SystemExit("broker did not come up")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise SystemExit("connection closed")
        buf += chunk
    return buf


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("wisp")
    ap.add_argument("--sessions", type=int, default=10000)
    ap.add_argument("--messages", type=int, default=1000000)
    a = ap.parse_args()
    per = max(1, a.messages // a.sessions)
    work = tempfile.mkdtemp(prefix="wisp-startup-")
    port = free_port()
    cfg = os.path.join(work, "wisp.json")

    def write_cfg(p):
        with open(cfg, "w") as f:
            f.write('{"listeners": [{"bind": "127.0.0.1", "port": %d}],'
                    ' "limits": {"max_queued_messages": %d},'
                    ' "persistence": {"enabled": true, "dir": "%s/data", "fsync": "no"},'
                    ' "log": {"level": "warning"}}' % (p, per + 10, work))

    write_cfg(port)
    log = open(os.path.join(work, "log"), "ab")
    proc = subprocess.Popen([a.wisp, "-c", cfg], stdout=log, stderr=log)
    try:
        wait_port(port, proc)
        t0 = time.monotonic()
        for i in range(a.sessions):
            s = socket.create_connection(("127.0.0.1", port))
            cid = b"keep-%05d" % i
            topic = b"startup/%05d" % i
            s.sendall(connect(cid, False) + packet(0x82, (1).to_bytes(2, "big") + s16(topic) + b"\x01") +
                      b"\xe0\x00")
            recv_exact(s, 4 + 5)  # CONNACK, SUBACK
            s.close()
        pub = socket.create_connection(("127.0.0.1", port))
        pub.sendall(connect(b"startup-pub", True))
        recv_exact(pub, 4)
        payload = b"x" * 16
        sent = 0
        pid = 0
        batch = 2000
        while sent < a.messages:
            out = bytearray()
            n = min(batch, a.messages - sent)
            for k in range(n):
                pid = pid % 65535 + 1
                topic = b"startup/%05d" % ((sent + k) % a.sessions)
                out += packet(0x32, s16(topic) + pid.to_bytes(2, "big") + payload)
            pub.sendall(out)
            recv_exact(pub, 4 * n)  # the PUBACKs
            sent += n
        fill_s = time.monotonic() - t0
        pub.sendall(b"\xe0\x00")
        pub.close()
        rss_before = rss_kib(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
        files = sorted(os.listdir(os.path.join(work, "data")))
        store = sum(os.path.getsize(os.path.join(work, "data", f)) for f in files)
        port = free_port()
        write_cfg(port)
        proc = subprocess.Popen([a.wisp, "-c", cfg], stdout=log, stderr=log)
        up = wait_port(port, proc)
        time.sleep(0.2)
        rss_after = rss_kib(proc.pid)
        print("sessions %d, queued messages %d (%d per session), 16-byte payloads" % (a.sessions, sent, per))
        print("filled in %.1f s; store %.1f MiB (%s); RSS before restart %.0f MiB"
              % (fill_s, store / 1048576, " ".join(files), rss_before / 1024))
        print("restart: accepting connections after %.2f s; RSS %.0f MiB" % (up, rss_after / 1024))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
