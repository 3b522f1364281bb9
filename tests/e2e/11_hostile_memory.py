#!/usr/bin/python3
# ctest: TIMEOUT 300 RUN_SERIAL TRUE
"""11 hostile memory: what one client can make the broker hold (issue 11,
items 1, 2 and 4).

Each attack runs as a bounded loop on loopback while a thread samples the
broker's VmRSS; every test asserts that the growth stays under a bound, that
an honest client's QoS 1 round trip completes during or after the attack,
and that the offender is disconnected with its reason logged once.

- Output: a client that sends PINGREQ, PUBREL or QoS 1 PUBLISH and never
  reads the answers is no longer read from once its output reaches
  max_output_buffer (its sends block), and is disconnected after
  output_buffer_timeout seconds over it. A subscriber that is only briefly
  over the bound keeps its connection and gets every message.
- Before CONNECT: a first packet that is not CONNECT is refused on its first
  byte [MQTT-3.1.0-1]; a CONNECT announcing more than max_connect_size is
  refused on its fixed header; connections sending unfinished CONNECTs share
  max_unauthenticated_bytes, past which the newest growth is closed.
- Queues: max_queued_bytes_total bounds the queues of all sessions together;
  the shipped defaults bound max_packet_size (1 MiB) and max_queued_bytes.

ASan keeps freed memory in a 256 MiB quarantine by default, which would count
in VmRSS; a 4 MiB quarantine keeps the figures about the broker's own memory.
"""

import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (CONNACK, PINGREQ_PKT, PUBREL, BrokerTestCase, Closed,  # noqa: E402
                      RawClient, ack_pkt, client_tls_context, connect_pkt, main, make_certs,
                      mqtt_str, publish_pkt, skip_unless_wisp, subscribe_pkt)

QUARANTINE = {"asan_options": "quarantine_size_mb=4"}
OUTPUT_BOUND = 65536
STALL_SECONDS = 2


class RssSampler:
    """Samples the broker's VmRSS every 20 ms until stopped (bounded by
    `limit_s`); .peak is the largest value seen, in KiB."""

    def __init__(self, broker, limit_s=120):
        self.broker = broker
        self.peak = broker.rss_kib()
        self.stop_event = threading.Event()
        self.deadline = time.monotonic() + limit_s
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_event.wait(0.02) and time.monotonic() < self.deadline:
            try:
                self.peak = max(self.peak, self.broker.rss_kib())
            except Exception:  # noqa: BLE001 - the broker exiting is reported elsewhere
                return

    def stop(self):
        self.stop_event.set()
        self.thread.join(timeout=5)
        try:
            self.peak = max(self.peak, self.broker.rss_kib())
        except Exception:  # noqa: BLE001
            pass
        return self.peak


def unread_socket(port, client_id, keepalive=0, tls=None):
    """A connected MQTT client socket that will never read again; its
    receive buffer is small so its window closes quickly. tls: an
    ssl.SSLContext to speak MQTT over TLS."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    if tls is not None:
        s = tls.wrap_socket(s, server_hostname="localhost")
    s.sendall(connect_pkt(client_id, keepalive=keepalive))
    ack = b""
    while len(ack) < 4:
        chunk = s.recv(4 - len(ack))
        if not chunk:
            raise AssertionError("no CONNACK for %s" % client_id)
        ack += chunk
    assert ack[0] >> 4 == CONNACK and ack[3] == 0, "CONNACK refused: %r" % ack
    return s


def flood(s, unit, total, block_timeout=1.0, write_size=65536):
    """Sends `unit` repeatedly (never a partial packet boundary lost), up to
    `total` bytes, in writes of about write_size bytes. Returns (bytes sent,
    how it ended): "blocked" when the broker stopped reading for
    block_timeout seconds, "closed" when it closed the connection, "done"
    when everything went through."""
    chunk = unit * max(1, write_size // len(unit))
    pending = memoryview(chunk)
    sent = 0
    s.settimeout(block_timeout)
    while sent < total:
        try:
            n = s.send(pending)
        except socket.timeout:
            return sent, "blocked"
        except OSError:
            return sent, "closed"
        sent += n
        pending = pending[n:]
        if not len(pending):
            pending = memoryview(chunk)
    return sent, "done"


def wait_sys(case, topic, expected, timeout=10):
    """Subscribes to a $SYS counter (sys_interval must be 1) and waits,
    bounded, until it reads `expected`; asserts the last value read."""
    watcher = case.raw(None, keepalive=0, tls=getattr(case, "client_tls", None))
    case.assertEqual(watcher.subscribe([(topic, 0)]), [0])
    deadline = time.monotonic() + timeout
    value = None
    while value != expected and time.monotonic() < deadline:
        value = int(watcher.recv_publish(timeout=5).payload)
    case.assertEqual(value, expected, topic)


def count_lines(broker, pattern, offset=0):
    rx = re.compile(pattern, re.I)
    return [ln for ln in broker.log_since(offset).splitlines() if rx.search(ln)]


class HonestPair:
    """A QoS 1 subscriber and a publisher; round_trip() publishes one QoS 1
    message and asserts that the subscriber gets it."""

    def __init__(self, case, name):
        self.case = case
        self.topic = "honest/%s" % name
        tls = getattr(case, "client_tls", None)
        self.sub = case.raw("honest-sub-%s" % name, keepalive=0, tls=tls)
        case.assertEqual(self.sub.subscribe([(self.topic, 1)]), [1])
        self.pub = case.raw("honest-pub-%s" % name, keepalive=0, tls=tls)
        self.n = 0

    def round_trip(self):
        self.n += 1
        payload = "ok-%d" % self.n
        self.pub.publish(self.topic, payload, qos=1, pid=self.n)
        got = self.sub.recv_publish(timeout=5)
        self.case.assertEqual((got.topic, got.payload), (self.topic, payload.encode()))


@skip_unless_wisp("output_buffer_timeout and the paused input are wisp's")
class OutputFloodTest(BrokerTestCase):
    """Item 1: answers to control packets count against max_output_buffer."""

    LIMITS = {"max_output_buffer": OUTPUT_BOUND, "output_buffer_timeout": STALL_SECONDS}
    # Bytes of requests per attack: the kernel's socket buffers absorb a few
    # MiB of answers before the broker's own queue grows (unbounded, these
    # became ~400 MB of queue).
    ATTACK_BYTES = 8 << 20
    RSS_GROWTH_KIB = 24 * 1024

    def broker_options(self):
        return dict(QUARANTINE, config={"sys_interval": 1})

    def run_attack(self, name, unit, attack_bytes=ATTACK_BYTES):
        honest = HonestPair(self, name)
        honest.round_trip()  # warm-up through the same path
        offset = self.broker.log_size()
        base = self.broker.rss_kib()
        sampler = RssSampler(self.broker)
        try:
            s = unread_socket(self.broker.port, "flood-%s" % name,
                              tls=getattr(self, "client_tls", None))
            self.on_cleanup(s.close)
            sent, how = flood(s, unit, attack_bytes)
            # The broker stopped reading this client; the others are served.
            honest.round_trip()
            reason = self.broker.wait_log(r"flood-%s.*disconnected: output over "
                                          r"limits\.max_output_buffer" % name, offset,
                                          timeout=STALL_SECONDS + 10)
            honest.round_trip()
        finally:
            peak = sampler.stop()
        sys.stderr.write("[%s: sent %d KiB (%s), VmRSS %d KiB, peak +%d KiB] "
                         % (name, sent >> 10, how, base, peak - base))
        self.assertLess(peak - base, self.RSS_GROWTH_KIB,
                        "VmRSS grew by %d KiB while a client sent %d KiB of %s and read nothing"
                        % (peak - base, sent >> 10, name))
        self.assertEqual(how, "blocked", "the broker kept reading a client that reads nothing "
                         "(%d KiB accepted)" % (sent >> 10))
        self.assertIsNotNone(reason, "the flooding client was not disconnected")
        lines = count_lines(self.broker, r"flood-%s.*output over" % name, offset)
        self.assertEqual(len(lines), 1, "reason logged %d times" % len(lines))
        wait_sys(self, "$SYS/broker/limits/output_stalled", 1)
        self.assert_broker_alive()

    def test_pingreq_flood_without_reading(self):
        """PINGREQ [MQTT-3.12.4-1] answered while the client reads nothing:
        input stops at max_output_buffer, the client is disconnected after
        output_buffer_timeout, RSS stays bounded."""
        self.run_attack("pingreq", PINGREQ_PKT)

    def test_pubrel_flood_without_reading(self):
        """PUBREL for unknown ids, each answered by a PUBCOMP [MQTT-4.3.3]."""
        self.run_attack("pubrel", ack_pkt(PUBREL, 7))

    def test_qos1_publish_flood_without_reading(self):
        """QoS 1 PUBLISH to a topic nobody reads, each answered by a PUBACK
        (7 bytes in, 4 out: more input is needed to fill the socket buffers)."""
        self.run_attack("publish", publish_pkt("n", b"", qos=1, pid=9), 24 << 20)


@skip_unless_wisp("output_buffer_timeout and the paused input are wisp's")
@unittest.skipIf(shutil.which("openssl") is None, "the openssl command-line tool is required")
class TlsOutputFloodTest(OutputFloodTest):
    """The same over TLS, where decrypted input can wait inside the
    transport while reading is paused and must be read when it resumes."""

    certs = None

    @classmethod
    def setUpClass(cls):
        cls.certs = make_certs(tempfile.mkdtemp(prefix="wisp-e2e-certs-"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certs, ignore_errors=True)

    def broker_options(self):
        self.client_tls = client_tls_context(os.path.join(self.certs, "ca.crt"))
        tls = {"cert": os.path.join(self.certs, "server.crt"),
               "key": os.path.join(self.certs, "server.key")}
        return dict(super().broker_options(), listener={"protocol": "mqtts", "tls": tls})

    # PUBREL and PUBLISH over TLS add nothing the PINGREQ case does not show.
    test_pubrel_flood_without_reading = None
    test_qos1_publish_flood_without_reading = None


class SlowSubscriberTest(BrokerTestCase):
    """A subscriber briefly over max_output_buffer is paused, not cut."""

    LIMITS = {"max_output_buffer": OUTPUT_BOUND, "output_buffer_timeout": 30,
              "max_inflight": 100, "max_queued_messages": 1000}
    MESSAGES = 200
    PAYLOAD = 8192

    def test_briefly_full_subscriber_keeps_its_connection(self):
        """200 QoS 1 messages of 8 KiB (25 times the output bound) reach a
        subscriber that starts reading only after all of them were
        published: it gets every one, in order, and stays connected."""
        sub = self.raw("slow-sub", keepalive=0)
        self.assertEqual(sub.subscribe([("slow/t", 1)]), [1])
        pub = self.raw("slow-pub", keepalive=0)
        offset = self.broker.log_size()
        for i in range(self.MESSAGES):
            pub.publish("slow/t", b"%08d" % i + b"." * (self.PAYLOAD - 8), qos=1, pid=1 + i)
        got = []
        for _ in range(self.MESSAGES):
            got.append(int(sub.recv_publish(timeout=10).payload[:8]))
        self.assertEqual(got, list(range(self.MESSAGES)))
        self.assertTrue(sub.is_open(), "the slow subscriber was disconnected")
        self.assertEqual(count_lines(self.broker, r"slow-sub.*disconnected", offset), [])


class ResumeTest(BrokerTestCase):
    """A paused client that starts reading again is resumed without losing
    a packet. The smallest output bound makes the broker pause in the middle
    of every read, so whole packets wait in the carried buffer when the
    socket is already empty: they must be handled on resume, not when more
    bytes arrive (which they never do here)."""

    LIMITS = {"max_output_buffer": 1024, "output_buffer_timeout": 30}
    EXACT = True

    def test_paused_client_resumes_and_gets_every_answer(self):
        """A client floods PINGREQ without reading until the broker stops
        reading it, then reads: it gets one PINGRESP per PINGREQ sent
        [MQTT-3.12.4-1], none lost across the pause, then the SUBACK of a
        SUBSCRIBE sent last, and stays connected."""
        s = unread_socket(self.broker.port, "resume", tls=getattr(self, "client_tls", None))
        self.on_cleanup(s.close)
        offset = self.broker.log_size()
        # Small writes: over TLS a write cut by the timeout is not counted.
        sent, how = flood(s, PINGREQ_PKT, 8 << 20, write_size=2048)
        self.assertEqual(how, "blocked")
        s.settimeout(10)
        stream = bytearray()
        deadline = time.monotonic() + 60
        while len(stream) < sent and time.monotonic() < deadline:
            chunk = s.recv(1 << 20)
            self.assertTrue(chunk, "closed after %d of %d bytes" % (len(stream), sent))
            stream += chunk
        # The broker reads again: a last packet marks the end of the stream.
        s.sendall(subscribe_pkt(77, [("resume/t", 0)]))
        suback = bytes([0x90, 0x03, 0x00, 77, 0x00])
        while not stream.endswith(suback) and time.monotonic() < deadline:
            chunk = s.recv(1 << 20)
            self.assertTrue(chunk, "closed after %d bytes" % len(stream))
            stream += chunk
        self.assertTrue(stream.endswith(suback), "no SUBACK after the PINGRESPs")
        answers = bytes(stream[:-len(suback)])
        self.assertEqual(answers, PINGREQ_PKT.replace(b"\xc0", b"\xd0") * (len(answers) // 2),
                         "answers are not all PINGRESP")
        # Over TCP every byte sent was counted; over TLS the last write cut
        # by the timeout may have gone through uncounted.
        self.assertGreaterEqual(len(answers), sent)
        self.assertLess(len(answers), sent + (0 if self.EXACT else 2 * 2048) + 1)
        s.sendall(PINGREQ_PKT)
        self.assertEqual(s.recv(2), b"\xd0\x00")
        self.assertEqual(count_lines(self.broker, r"resume.*disconnected", offset), [])


@skip_unless_wisp("TLS listeners as wisp configures them")
@unittest.skipIf(shutil.which("openssl") is None, "the openssl command-line tool is required")
class TlsResumeTest(ResumeTest):
    """The same over TLS: decrypted PINGREQs wait inside the transport as
    well as in the carried buffer while reading is paused."""

    EXACT = False
    certs = None

    @classmethod
    def setUpClass(cls):
        cls.certs = make_certs(tempfile.mkdtemp(prefix="wisp-e2e-certs-"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certs, ignore_errors=True)

    def broker_options(self):
        self.client_tls = client_tls_context(os.path.join(self.certs, "ca.crt"))
        tls = {"cert": os.path.join(self.certs, "server.crt"),
               "key": os.path.join(self.certs, "server.key")}
        return {"listener": {"protocol": "mqtts", "tls": tls}}


@skip_unless_wisp("max_connect_size and max_unauthenticated_bytes are wisp's")
class BeforeConnectTest(BrokerTestCase):
    """Item 2: what a client that has not sent a whole CONNECT can hold."""

    # A large max_packet_size, as before the new default: the bounds below
    # must hold without it.
    LIMITS = {"max_packet_size": 64 << 20, "max_unauthenticated_bytes": 1 << 20}
    RSS_GROWTH_KIB = 24 * 1024

    def broker_options(self):
        # Every refusal is logged here (log.rate_limit 0): the test counts
        # one line per connection closed.
        return dict(QUARANTINE, config={"sys_interval": 1,
                                        "log": {"level": "debug", "rate_limit": 0}})

    def open_raw(self):
        s = socket.create_connection(("127.0.0.1", self.broker.port), timeout=5)
        self.on_cleanup(s.close)
        return s

    def assert_closed_by_broker(self, s):
        """The broker closed `s` (EOF or reset), within a bounded wait."""
        s.settimeout(5)
        try:
            while s.recv(65536):
                pass
        except socket.timeout:
            self.fail("the broker kept the connection open")
        except OSError:
            pass  # reset: closed with our bytes unread

    def test_first_packet_publish_refused_on_its_first_byte(self):
        """20 connections each start with a PUBLISH announcing 60 MiB, send
        2 MiB of it and stay open: each is closed on its first byte
        [MQTT-3.1.0-1] and logged once; nothing is buffered (VmRSS)."""
        honest = HonestPair(self, "first")
        offset = self.broker.log_size()
        base = self.broker.rss_kib()
        sampler = RssSampler(self.broker)
        socks = []
        try:
            for i in range(20):
                s = self.open_raw()
                head = b"\x30" + bytes([0x80, 0x80, 0x80, 0x1e]) + mqtt_str("t/%d" % i)
                flood(s, head + b"\x00" * (64 * 1024 - len(head)), 2 << 20)
                socks.append(s)
            honest.round_trip()
            for s in socks:
                self.assert_closed_by_broker(s)
        finally:
            peak = sampler.stop()
        sys.stderr.write("[peak +%d KiB] " % (peak - base))
        self.assertLess(peak - base, self.RSS_GROWTH_KIB)
        lines = count_lines(self.broker, r"closed: first packet is not CONNECT", offset)
        self.assertEqual(len(lines), 20, "\n".join(lines[:5]))

    def test_connect_over_max_connect_size_refused_on_its_header(self):
        """A CONNECT announcing 50 MiB (over max_connect_size, 327701 by
        default: the largest a 3.1.1 CONNECT can be) is refused as soon as
        its fixed header arrives."""
        honest = HonestPair(self, "big")
        offset = self.broker.log_size()
        s = self.open_raw()
        head = b"\x10" + bytes([0x80, 0x80, 0x80, 0x19]) + mqtt_str("MQTT") + b"\x04\x02\x00\x3c"
        flood(s, head + b"\x00" * (64 * 1024 - len(head)), 8 << 20)
        line = self.broker.wait_log(r"closed: CONNECT of \d+ bytes exceeds limits\.max_connect_size",
                                    offset)
        self.assertIsNotNone(line, "a CONNECT announcing 50 MiB was not refused")
        self.assert_closed_by_broker(s)
        honest.round_trip()
        self.assertEqual(len(count_lines(self.broker, r"exceeds limits\.max_connect_size",
                                         offset)), 1)
        wait_sys(self, "$SYS/broker/limits/unauthenticated_refused", 1)

    def test_unfinished_connects_share_a_budget(self):
        """100 connections each send 300,000 bytes of a 320,000-byte CONNECT
        (30 MB in all) and stop: with max_unauthenticated_bytes at 1 MiB
        the connections that would pass it are closed, the episode is logged
        once, RSS stays bounded and an honest client connects and round-trips."""
        honest = HonestPair(self, "budget")
        offset = self.broker.log_size()
        base = self.broker.rss_kib()
        sampler = RssSampler(self.broker)
        body_len = 320000
        head = b"\x10" + bytes([body_len & 0x7f | 0x80, (body_len >> 7) & 0x7f | 0x80,
                                body_len >> 14]) + mqtt_str("MQTT") + b"\x04\x02\x00\x3c"
        socks = []
        try:
            for _ in range(100):
                s = self.open_raw()
                flood(s, head + b"\x00" * (300000 - len(head)), 300000)
                socks.append(s)
            # Everything sent has been read once an honest client gets through.
            with RawClient(self.broker.port) as late:
                self.assertEqual(late.connect("late-honest"), 0)
            honest.round_trip()
            # Bounded wait until the broker has judged every connection.
            deadline = time.monotonic() + 10
            while (len(count_lines(self.broker, r"max_unauthenticated_bytes before", offset)) < 90
                   and time.monotonic() < deadline):
                time.sleep(0.05)
        finally:
            peak = sampler.stop()
        closed = 0
        for s in socks:
            s.settimeout(0.5)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except socket.timeout:
                pass
            except OSError:
                closed += 1
        sys.stderr.write("[closed %d of 100, peak +%d KiB] " % (closed, peak - base))
        self.assertLess(peak - base, self.RSS_GROWTH_KIB)
        self.assertGreaterEqual(closed, 90, "connections over the budget were kept")
        self.assertEqual(len(count_lines(self.broker, r"max_unauthenticated_bytes is", offset)), 1)
        self.assertEqual(len(count_lines(self.broker, r"closed: input buffer over "
                                         r"limits\.max_unauthenticated_bytes", offset)), closed)
        wait_sys(self, "$SYS/broker/limits/unauthenticated_refused", closed)


@skip_unless_wisp("max_queued_bytes_total is wisp's")
class QueueTotalTest(BrokerTestCase):
    """Item 4: the queues of all sessions together are bounded."""

    LIMITS = {"max_queued_bytes_total": 1 << 20, "max_queued_bytes": 0,
              "max_queued_messages": 100000}
    PAYLOAD = 8192
    MESSAGES = 300

    def broker_options(self):
        return dict(QUARANTINE, config={"sys_interval": 1, "persistence": {"enabled": False}})

    def test_total_queued_bytes_bounded_and_counted(self):
        """Three offline persistent sessions are sent 300 QoS 1 messages of
        8 KiB each (7 MiB of queue): together they keep at most 1 MiB, the
        drop is logged once and counted in $SYS, the publisher gets every
        PUBACK and an honest subscriber its round trip."""
        for i in range(3):
            with RawClient(self.broker.port) as c:
                self.assertEqual(c.connect("offline-%d" % i, clean=False), 0)
                self.assertEqual(c.subscribe([("queued/t", 1)]), [1])
        honest = HonestPair(self, "queue")
        offset = self.broker.log_size()
        pub = self.raw("queue-pub", keepalive=0)
        for i in range(self.MESSAGES):
            pub.publish("queued/t", b"%08d" % i + b"." * (self.PAYLOAD - 8), qos=1, pid=1 + i)
        honest.round_trip()
        self.assertEqual(len(count_lines(self.broker, r"reached limits\.max_queued_bytes_total",
                                         offset)), 1)
        kept = 0
        for i in range(3):
            c = self.raw("offline-%d" % i, clean=False)
            got = []
            try:
                for _ in range(self.MESSAGES):
                    got.append(int(c.recv_publish(timeout=1.0).payload[:8]))
            except (socket.timeout, AssertionError):
                pass
            self.assertEqual(got, list(range(len(got))), "queue out of order")
            kept += len(got)
        self.assertLessEqual(kept * self.PAYLOAD, (1 << 20) + 3 * 20 * self.PAYLOAD)
        self.assertGreater(kept, 0)
        watcher = self.raw("sys-watch", keepalive=0)
        self.assertEqual(watcher.subscribe([("$SYS/broker/messages/dropped/queue_total", 0)]),
                         [0])
        # $SYS is published every second: wait (bounded) for the final count.
        expected = 3 * self.MESSAGES - kept
        deadline = time.monotonic() + 10
        value = None
        while value != expected and time.monotonic() < deadline:
            value = int(watcher.recv_publish(timeout=5).payload)
        self.assertEqual(value, expected)


@skip_unless_wisp("wisp's defaults")
class DefaultsTest(BrokerTestCase):
    """Item 4: the shipped defaults (no limits configured)."""

    def test_default_max_packet_size_is_one_mebibyte(self):
        """A PUBLISH of 1 MiB + 1 byte is refused with the default limits; one
        just under it goes through."""
        sub = self.raw("def-sub", keepalive=0)
        self.assertEqual(sub.subscribe([("def/t", 1)]), [1])
        pub = self.raw("def-pub", keepalive=0)
        ok = b"x" * ((1 << 20) - 16)
        pub.publish("def/t", ok, qos=1)
        self.assertEqual(len(sub.recv_publish(timeout=10).payload), len(ok))
        offset = self.broker.log_size()
        big = self.raw("def-big", keepalive=0)
        try:
            big.send(publish_pkt("def/t", b"x" * (1 << 20), qos=1))
        except OSError:
            pass  # closed on the fixed header, before the body was all sent
        self.assertTrue(big.wait_closed(), "a PUBLISH over 1 MiB was accepted")
        self.assertIsNotNone(self.broker.wait_log(r"def-big.*exceeds the maximum packet size",
                                                  offset))

    def test_default_queue_bytes_bound_an_offline_session(self):
        """An offline persistent session sent 40 QoS 1 messages of 512 KiB
        (20 MiB) keeps at most max_queued_bytes (8 MiB) of them."""
        with RawClient(self.broker.port) as c:
            self.assertEqual(c.connect("def-offline", clean=False), 0)
            self.assertEqual(c.subscribe([("defq/t", 1)]), [1])
        pub = self.raw("defq-pub", keepalive=0)
        for i in range(40):
            pub.publish("defq/t", b"%08d" % i + b"." * (512 * 1024 - 8), qos=1, pid=1 + i)
        c = self.raw("def-offline", clean=False)
        got = []
        try:
            for _ in range(40):
                got.append(int(c.recv_publish(timeout=2.0).payload[:8]))
        except (socket.timeout, AssertionError, Closed):
            pass
        self.assertEqual(got, list(range(len(got))))
        self.assertGreater(len(got), 0)
        self.assertLessEqual(len(got), 16, "more than 8 MiB queued for one session")


if __name__ == "__main__":
    main()
