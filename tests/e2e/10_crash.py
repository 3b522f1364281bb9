#!/usr/bin/python3
# ctest: TIMEOUT 240
"""Durability (issue #8): kill -9 at random moments loses nothing acknowledged.

Each round starts the broker on the same data directory, publishes QoS 1
and QoS 2 messages to an offline persistent subscriber as fast as the broker
acknowledges them, and kills the broker with SIGKILL after a random delay.
The next broker must then deliver every message whose PUBACK (QoS 1) or
PUBREC (QoS 2) the publisher received: QoS 1 at least once, QoS 2 exactly
once [MQTT-4.3.3], and never a QoS 2 message twice; retained messages stay.

The number of rounds and the seed come from WISP_CRASH_ROUNDS (default 4)
and WISP_CRASH_SEED (default: random, printed so a failure can be replayed).
"""
import os
import random
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (  # noqa: E402
    IS_MOSQUITTO, Broker, RawClient, ack_pkt, connect_pkt, publish_pkt,
)

PUBACK, PUBREC, PUBREL, PUBCOMP = 4, 5, 6, 7
ROUNDS = int(os.environ.get("WISP_CRASH_ROUNDS", "4"))
SEED = int(os.environ.get("WISP_CRASH_SEED", str(random.randrange(1 << 30))))


def varint_len(buf, off):
    """(value, bytes used) of the Remaining Length at buf[off:], or None."""
    value, mult = 0, 1
    for i in range(4):
        if off + i >= len(buf):
            return None
        b = buf[off + i]
        value += (b & 0x7F) * mult
        if not b & 0x80:
            return value, i + 1
        mult *= 128
    raise AssertionError("bad remaining length from the broker")


class Pipelined:
    """A publisher that keeps many messages in flight on one socket and
    records which ones the broker acknowledged before it died."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(connect_pkt("crash-pub", clean=True, keepalive=0))
        self.buf = b""
        self.acked = {}      # packet id -> (qos, seq) once PUBACK / PUBREC arrived
        self.pending = {}    # packet id -> (qos, seq) sent, not yet acknowledged
        self.sock.setblocking(False)
        self.connected = False

    def _packets(self):
        while True:
            if len(self.buf) < 2:
                return
            rl = varint_len(self.buf, 1)
            if rl is None:
                return
            n, used = rl
            total = 1 + used + n
            if len(self.buf) < total:
                return
            first, body = self.buf[0], self.buf[1 + used:total]
            self.buf = self.buf[total:]
            yield first >> 4, body

    def pump(self, timeout):
        """Reads whatever arrived; False once the connection is gone."""
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return True
        try:
            data = self.sock.recv(65536)
        except (ConnectionError, BlockingIOError):
            return not isinstance(sys.exc_info()[1], ConnectionError)
        if not data:
            return False
        self.buf += data
        for ptype, body in self._packets():
            if ptype == 2:
                assert body[1] == 0, "CONNACK %r" % body
                self.connected = True
            elif ptype in (PUBACK, PUBREC):
                pid = int.from_bytes(body[:2], "big")
                entry = self.pending.pop(pid, None)
                if entry is not None:
                    self.acked[pid] = entry
                if ptype == PUBREC:
                    self.send(ack_pkt(PUBREL, pid))
        return True

    def send(self, data):
        try:
            self.sock.sendall(data)
            return True
        except (BlockingIOError, ConnectionError, OSError):
            return False

    def close(self):
        self.sock.close()


class StoreCase(unittest.TestCase):
    """Brokers sharing one data directory, killed or stopped by the test."""

    PREFIX = "wisp-store-"

    def setUp(self):
        if IS_MOSQUITTO:
            self.skipTest("wisp's store: mosquitto saves on an interval")
        self.data = tempfile.mkdtemp(prefix=self.PREFIX)
        self.brokers = []

    def tearDown(self):
        for b in self.brokers:
            if b.alive():
                b.proc.kill()
                b.proc.wait(timeout=10)
            b.cleanup()
        shutil.rmtree(self.data, ignore_errors=True)

    def start(self, persistence, limits=None):
        b = Broker(limits=limits, config={"persistence": dict(enabled=True, **persistence)})
        self.brokers.append(b)
        return b.start()


class CrashTest(StoreCase):
    PREFIX = "wisp-crash-"

    def broker(self, fsync):
        # The offline queue must hold every message of a round: messages over
        # max_queued_messages are dropped by design (and counted), which is
        # not what this test is about.
        return self.start({"dir": os.path.join(self.data, "store"), "fsync": fsync},
                          limits={"max_queued_messages": 100000})

    def kill9(self, b):
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(timeout=10)
        b.exit_status = -9  # expected: stop() must not call it a crash

    def drain_subscriber(self, port):
        """Connects the persistent subscriber and collects everything the
        broker has for it; returns {payload: count}."""
        sub = RawClient(port)
        try:
            sub.send(connect_pkt("crash-sub", clean=False, keepalive=0))
            ack = sub.expect(2)
            self.assertEqual(ack.body[1], 0)
            self.assertEqual(ack.body[0] & 1, 1, "[MQTT-3.2.2-2] session present after restart")
            got = {}
            while True:
                try:
                    p = sub.recv_packet(timeout=1.5)
                except Exception:  # noqa: BLE001 - quiet for 1.5 s: the queue is drained
                    break
                if p.type == 3:
                    q = p.qos
                    got[p.payload] = got.get(p.payload, 0) + 1
                    if q == 1:
                        sub.send(ack_pkt(PUBACK, p.pid))
                    elif q == 2:
                        sub.send(ack_pkt(PUBREC, p.pid))
                elif p.type == PUBREL:
                    sub.send(ack_pkt(PUBCOMP, p.pid))
            sub.send(b"\xe0\x00")
            return got
        finally:
            sub.close()

    def run_rounds(self, fsync):
        rng = random.Random(SEED)
        sys.stderr.write("\ncrash test (%s): seed %d, %d rounds\n" % (fsync, SEED, ROUNDS))
        b = self.broker(fsync)
        sub = RawClient(b.port)
        sub.send(connect_pkt("crash-sub", clean=False, keepalive=0))
        sub.expect(2)
        sub.subscribe([("crash/#", 2)])
        sub.send(b"\xe0\x00")
        sub.close()
        retained = None
        for rnd in range(ROUNDS):
            pub = Pipelined(b.port)
            value = b"retained-%d" % rnd
            seq, pid = 0, 0
            t_connect = time.monotonic() + 10
            while not pub.connected and time.monotonic() < t_connect and pub.pump(0.5):
                pass
            self.assertTrue(pub.connected)
            pub.send(publish_pkt("crash/state", value, qos=1, retain=True, pid=65535))
            pub.pending[65535] = (1, "retained")
            # Kill at a random moment, but only once something was
            # acknowledged (a slow sanitizer build may need a while).
            deadline = time.monotonic() + 0.05 + rng.random() * 0.6
            give_up = time.monotonic() + 10
            while ((time.monotonic() < deadline or not pub.acked) and time.monotonic() < give_up
                   and seq < 20000):
                if len(pub.pending) < 200:
                    seq += 1
                    pid = pid % 60000 + 1
                    qos = 1 + (seq % 2)
                    pub.pending[pid] = (qos, seq)
                    pub.send(publish_pkt("crash/r%d" % rnd, b"%d:%d:%d" % (rnd, qos, seq), qos=qos, pid=pid))
                if not pub.pump(0):
                    break
            self.kill9(b)
            # What the publisher saw acknowledged before the kill.
            while pub.pump(0.05):
                pass
            pub.close()
            acked = list(pub.acked.values())
            if (1, "retained") in acked:
                retained = value
            b = self.broker(fsync)
            got = self.drain_subscriber(b.port)
            for qos, s in acked:
                if s == "retained":
                    continue
                key = b"%d:%d:%d" % (rnd, qos, s)
                n = got.get(key, 0)
                if qos == 1:
                    self.assertGreaterEqual(n, 1, "acknowledged QoS 1 message %r lost (seed %d)" % (key, SEED))
                else:
                    self.assertEqual(n, 1, "acknowledged QoS 2 message %r delivered %d times (seed %d)"
                                     % (key, n, SEED))
            for key, n in got.items():
                if key.count(b":") == 2 and key.split(b":")[1] == b"2":
                    self.assertEqual(n, 1, "QoS 2 message %r delivered %d times (seed %d)" % (key, n, SEED))
            self.assertGreater(len(acked), 0, "nothing was acknowledged before the kill")
            if retained is not None:
                check = RawClient(b.port)
                check.connect("crash-check")
                check.subscribe([("crash/state", 1)])
                p = check.recv_publish()
                self.assertEqual(p.payload, retained, "retained message after kill -9")
                self.assertTrue(p.retain)
                check.close()
        b.stop()

    def test_kill9_loses_no_acknowledged_message_fsync_no(self):
        self.run_rounds("no")

    def test_kill9_loses_no_acknowledged_message_fsync_always(self):
        self.run_rounds("always")


class CompactionTest(StoreCase):
    """Compaction rewrites the live state into a snapshot: after several
    compactions and a restart, queued messages are all there once and in
    order, acknowledged ones stay gone, retained messages are as last set."""

    def broker(self):
        return self.start({"dir": self.data, "fsync": "no", "compact_min_size": 65536},
                          limits={"max_queued_messages": 10000})

    def test_state_survives_compactions_and_restart(self):
        b = self.broker()
        keeper = RawClient(b.port)
        keeper.connect("comp-keeper", clean=False)
        keeper.subscribe([("comp/#", 1)])
        keeper.close()
        live = RawClient(b.port)
        live.connect("comp-live", clean=False)
        live.subscribe([("comp/#", 1)])
        pub = RawClient(b.port)
        pub.connect("comp-pub")
        pub.publish("comp/ret", b"r0", qos=1, retain=True, pid=1)
        pub.publish("comp/gone", b"bye", qos=1, retain=True, pid=2)
        n = 3000
        for i in range(n):
            pub.publish("comp/m", b"msg-%05d-" % i + b"x" * 48, qos=1, pid=3 + i % 60000)
            got = live.recv_publish()
            live.send(ack_pkt(PUBACK, got.pid))
        pub.publish("comp/ret", b"r1", qos=1, retain=True, pid=1)
        pub.publish("comp/gone", b"", qos=1, retain=True, pid=2)
        for _ in range(4):  # the last live deliveries: retained updates and the clear
            got = live.recv_publish()
            live.send(ack_pkt(PUBACK, got.pid))
        live.ping()
        live.send(b"\xe0\x00")
        live.close()
        pub.close()
        b.stop()
        snaps = [f for f in os.listdir(self.data) if f.startswith("snap.")]
        self.assertTrue(snaps, "no compaction happened: %s" % os.listdir(self.data))

        b = self.broker()
        self.assertRegex(b.log(), r"restored 2 sessions")
        live = RawClient(b.port)
        live.send(connect_pkt("comp-live", clean=False, keepalive=0))
        self.assertEqual(live.expect(2).body, b"\x01\x00")
        live.assert_no_packet(wait=1.0)  # everything it acknowledged stays acknowledged
        live.close()
        keeper = RawClient(b.port)
        keeper.send(connect_pkt("comp-keeper", clean=False, keepalive=0))
        keeper.expect(2)
        payloads = []
        while True:
            try:
                p = keeper.recv_publish(timeout=2.0)
            except Exception:  # noqa: BLE001 - drained
                break
            payloads.append(p.payload)
            keeper.send(ack_pkt(PUBACK, p.pid))
        keeper.close()
        msgs = [x for x in payloads if x.startswith(b"msg-")]
        self.assertEqual(len(msgs), n, "each queued message exactly once")
        self.assertEqual(msgs, sorted(msgs), "in order")
        check = RawClient(b.port)
        check.connect("comp-check")
        check.subscribe([("comp/ret", 1), ("comp/gone", 1)])
        p = check.recv_publish()
        self.assertEqual((p.topic, p.payload, p.retain), ("comp/ret", b"r1", True))
        check.assert_no_packet(wait=0.5)  # comp/gone was cleared
        check.close()
        b.stop()


class DamagedStoreTest(StoreCase):
    """A torn or bit-flipped log at start-up: the broker starts, keeps what is
    intact and says what it dropped; it never crashes on a bad file."""

    def broker(self):
        return self.start({"dir": self.data, "fsync": "no"})

    def fill(self, n):
        b = self.broker()
        c = RawClient(b.port)
        c.connect("keeper", clean=False)
        c.subscribe([("d/#", 1)])
        c.close()
        p = RawClient(b.port)
        p.connect("filler")
        for i in range(1, n + 1):
            p.publish("d/x", b"msg-%04d" % i, qos=1, pid=i)
        p.close()
        b.stop()

    def log_file(self):
        logs = sorted(f for f in os.listdir(self.data) if f.startswith("log."))
        self.assertTrue(logs, os.listdir(self.data))
        return os.path.join(self.data, logs[-1])

    def received(self, b):
        c = RawClient(b.port)
        c.send(connect_pkt("keeper", clean=False, keepalive=0))
        c.expect(2)
        got = []
        while True:
            try:
                p = c.recv_publish(timeout=1.0)
            except Exception:  # noqa: BLE001 - drained
                break
            got.append(p.payload)
            c.send(ack_pkt(PUBACK, p.pid))
        c.close()
        return got

    def test_torn_tail_is_truncated_and_the_rest_kept(self):
        self.fill(50)
        path = self.log_file()
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(size - 7)
        b = self.broker()
        got = self.received(b)
        self.assertGreaterEqual(len(got), 45)
        self.assertEqual(got, sorted(got), "order kept")
        self.assertRegex(b.log(), r"(?i)truncat")
        b.stop()

    def test_bit_flip_in_the_middle_skips_only_that_record(self):
        self.fill(50)
        path = self.log_file()
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(size // 2)
            f.write(bytes([byte[0] ^ 0x10]))
        b = self.broker()
        got = self.received(b)
        self.assertGreaterEqual(len(got), 40, "only the damaged region is lost")
        self.assertRegex(b.log(), r"(?i)damage|corrupt|skip")
        b.stop()

    def test_garbage_header_refuses_to_start_with_the_file_named(self):
        self.fill(3)
        path = self.log_file()
        with open(path, "r+b") as f:
            f.write(b"NOTWISP!")
        b = Broker(config={"persistence": {"enabled": True, "dir": self.data}})
        self.brokers.append(b)
        status, log = b.start_failing()
        self.assertEqual(status, 1)
        self.assertIn(os.path.basename(path), log)


if __name__ == "__main__":
    unittest.main(verbosity=2)
