#!/usr/bin/python3
# ctest: TIMEOUT 240 RUN_SERIAL ON
"""14 TLS throughput (issue 13, the transport contract): big messages over
TLS, in bulk, arrive complete and in order.

A TLS read returns at most one record and a TLS write sends at most one, so
the broker must call again after a short read or write instead of taking it
for "drained" or "socket full" (net/transport.h). These tests move
COUNT messages of 64 KiB, each several records long, through an mqtts
listener in both directions of the broker's transport:

- paho publishes at QoS 1 (each message on its own numbered topic) and
  mosquitto_sub receives at QoS 1, printing only topic and length, so the
  order and size of every delivery are checked without 640 MB of output;
- mosquitto_pub -l publishes one 64 KiB line per message at QoS 1 and a paho
  subscriber checks the sequence number inside each payload.

Everything is synchronised on deliveries (and each wait is bounded); the
tests assert what arrives, never how fast.
"""

import collections
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (MOSQUITTO_PUB, MOSQUITTO_SUB, BrokerTestCase, main,  # noqa: E402
                      make_certs, paho_get, paho_subscribe)

COUNT = int(os.environ.get("WISP_E2E_TLS_COUNT", "10000"))
PAYLOAD = 64 * 1024
WINDOW = 64          # paho publishes in flight before it waits for PUBACKs
DEADLINE = 180.0     # seconds for a whole transfer (a hang, not a speed test)
QUIET = 30.0         # seconds without any delivery before the test gives up

CERTS = None


def setUpModule():
    global CERTS
    if shutil.which("openssl") is None:
        raise AssertionError("the openssl command-line tool is required: install the Debian "
                             "package openssl (scripts/deps.sh --test)")
    CERTS = tempfile.mkdtemp(prefix="wisp-e2e-tput-")
    make_certs(CERTS)


def tearDownModule():
    if CERTS:
        shutil.rmtree(CERTS, ignore_errors=True)


def payload_for(seq):
    """64 KiB whose first line names the sequence number; no newline inside
    (mosquitto_pub -l sends one message per line)."""
    head = b"%08d:" % seq
    filler = bytes((seq + i) % 26 + 97 for i in range(251))
    body = head + filler * ((PAYLOAD - len(head)) // len(filler) + 1)
    return body[:PAYLOAD]


class TlsThroughput(BrokerTestCase):
    # The publisher is acknowledged as soon as its message is queued, so a
    # subscriber that falls behind (paho's thread starved on a busy machine)
    # lets the queue grow: the byte bounds (8 MiB per session by default)
    # would drop messages there, which is not what this test is about.
    LIMITS = {"max_inflight": 1000, "max_queued_messages": 100000,
              "max_queued_bytes": 1 << 30, "max_queued_bytes_total": 1 << 30}

    def broker_options(self):
        tls = {"cert": os.path.join(CERTS, "server.crt"),
               "key": os.path.join(CERTS, "server.key")}
        return {"listener": {"protocol": "mqtts", "tls": tls}}

    @property
    def ca(self):
        return os.path.join(CERTS, "ca.crt")

    def tls_args(self):
        return ["--cafile", self.ca]

    def test_paho_publishes_mosquitto_sub_receives_in_order(self):
        """COUNT x 64 KiB at QoS 1: paho over TLS in, mosquitto_sub over TLS
        out; every message arrives once, in order, whole."""
        argv = ["stdbuf", "-oL", MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(self.broker.port),
                "-q", "1", "-t", "tput/#", "-C", str(COUNT), "-F", "%t %l", "-d",
                "-i", "tput-sub"] + self.tls_args()
        sub = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
        self.on_cleanup(lambda: (sub.poll() is None and sub.kill(), sub.wait(10)))
        lines = collections.deque()
        subscribed = threading.Event()
        done = threading.Event()

        def read():
            for raw in sub.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if "received SUBACK" in line:
                    subscribed.set()
                elif line.startswith("tput/"):
                    lines.append(line)
            done.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        self.assertTrue(subscribed.wait(20), "mosquitto_sub got no SUBACK")

        pub = self.paho("tput-pub", tls={"ca_certs": self.ca})
        pub.max_inflight_messages_set(WINDOW)
        pending = collections.deque()
        start = time.monotonic()
        for seq in range(COUNT):
            pending.append(pub.publish("tput/%d" % seq, payload_for(seq), qos=1))
            if len(pending) >= WINDOW:
                info = pending.popleft()
                info.wait_for_publish(QUIET)
                self.assertTrue(info.is_published(), "no PUBACK for a message within %ss" % QUIET)
            self.assertLess(time.monotonic() - start, DEADLINE, "publishing did not finish")
        while pending:
            info = pending.popleft()
            info.wait_for_publish(QUIET)
            self.assertTrue(info.is_published(), "no PUBACK within %ss" % QUIET)

        seen = 0
        while not done.wait(1.0):
            if len(lines) > seen:
                seen = len(lines)
                quiet_since = time.monotonic()
            elif time.monotonic() - (quiet_since if seen else start) > QUIET:
                break
            self.assertLess(time.monotonic() - start, DEADLINE, "delivery did not finish")
        self.assertEqual(sub.wait(10), 0, "mosquitto_sub exit status")
        reader.join(10)
        got = list(lines)
        self.assertEqual(len(got), COUNT, "deliveries")
        for seq, line in enumerate(got):
            if line != "tput/%d %d" % (seq, PAYLOAD):
                self.fail("delivery %d is %r, expected tput/%d of %d bytes" % (seq, line, seq, PAYLOAD))
        self.assert_broker_alive()

    def test_mosquitto_pub_publishes_paho_receives_in_order(self):
        """COUNT x 64 KiB lines from mosquitto_pub -l over TLS at QoS 1; a
        paho subscriber over TLS gets each once, in order, byte for byte."""
        sub = self.paho("tput-paho-sub", tls={"ca_certs": self.ca})
        self.assertEqual(paho_subscribe(sub, [("tput/lines", 1)]), [1])
        argv = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(self.broker.port), "-q", "1",
                "-t", "tput/lines", "-l", "-i", "tput-lines"] + self.tls_args()
        pub = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
        self.on_cleanup(lambda: (pub.poll() is None and pub.kill(), pub.wait(10)))

        def feed():
            try:
                for seq in range(COUNT):
                    pub.stdin.write(payload_for(seq) + b"\n")
                pub.stdin.close()
            except (BrokenPipeError, ValueError):
                pass

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        start = time.monotonic()
        for seq in range(COUNT):
            msg = paho_get(sub, timeout=QUIET)
            if msg.payload != payload_for(seq):
                self.fail("message %d: got %d bytes starting %r" % (seq, len(msg.payload),
                                                                    msg.payload[:9]))
            self.assertLess(time.monotonic() - start, DEADLINE, "delivery did not finish")
        feeder.join(QUIET)
        self.assertEqual(pub.wait(QUIET), 0, pub.stderr.read().decode(errors="replace"))
        self.assertTrue(sub.received.empty(), "a message too many")
        self.assert_broker_alive()


if __name__ == "__main__":
    main()
