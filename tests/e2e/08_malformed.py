#!/usr/bin/python3
"""08 malformed: bad input costs only the offending connection.

For every case the broker must close that connection, log why, and keep
serving a witness client that stays connected throughout (it still gets
PINGRESP and still receives a publish from a fresh client). Also: bogus
huge Remaining Lengths must not grow the broker's memory, and 1000 seeded
random garbage buffers never kill it.
"""

import os
import random
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (IS_MOSQUITTO, BrokerTestCase, Closed, RawClient,  # noqa: E402
                      connect_pkt, main, mqtt_str, packet, publish_pkt, skip_unless_wisp,
                      subscribe_pkt, unsubscribe_pkt)

MAX_PACKET = 4096

# The log line must say the connection went away and why. The reasons are
# wisp's codec error texts (mqtt_strerror) or mosquitto's wording.
R_LENGTH = r"remaining length|malformed|protocol"
R_FLAGS = r"flags|malformed|protocol"
R_QOS = r"qos|malformed|protocol"
R_UTF8 = r"utf-?8|string|malformed|protocol"
R_TOPIC = r"wildcard|topic|malformed|protocol"
R_PACKET = r"malformed|protocol|packet type|invalid"
R_SIZE = r"too large|too big|exceeds|oversize|maximum packet size"

# (name, bytes sent after a valid CONNECT, reason regex, spec rule)
AFTER_CONNECT = [
    ("five_byte_remaining_length", b"\x30\xff\xff\xff\xff\x01", R_LENGTH, "MQTT-2.2.3"),
    ("qos3_publish", bytes([0x36]) + publish_pkt("t", "x", qos=1)[1:], R_QOS, "MQTT-3.3.1-4"),
    ("subscribe_flags_0", bytes([0x80]) + subscribe_pkt(1, [("a", 0)])[1:], R_FLAGS,
     "MQTT-3.8.1-1"),
    ("pubrel_flags_0", b"\x60\x02\x00\x01", R_FLAGS, "MQTT-3.6.1-1"),
    ("unsubscribe_flags_0", bytes([0xA0]) + unsubscribe_pkt(1, ["a"])[1:], R_FLAGS,
     "MQTT-3.10.1-1"),
    ("invalid_utf8_topic", publish_pkt(b"a/\xc3\x28", "x"), R_UTF8, "MQTT-1.5.3-1"),
    ("utf8_surrogate_topic", publish_pkt(b"a/\xed\xa0\x80", "x"), R_UTF8, "MQTT-1.5.3-1"),
    ("utf8_overlong_topic", publish_pkt(b"a/\xc0\xaf", "x"), R_UTF8, "MQTT-1.5.3-1"),
    ("nul_in_topic", publish_pkt(b"a/\x00b", "x"), R_UTF8, "MQTT-1.5.3-2"),
    ("nul_in_filter", subscribe_pkt(1, [("a/\x00", 0)]), R_UTF8, "MQTT-1.5.3-2"),
    ("plus_in_publish_topic", publish_pkt("a/+/b", "x"), R_TOPIC, "MQTT-3.3.2-2"),
    ("hash_in_publish_topic", publish_pkt("a/#", "x"), R_TOPIC, "MQTT-3.3.2-2"),
    ("empty_publish_topic", publish_pkt("", "x"), R_TOPIC, "MQTT-4.7.3-1"),
    ("publish_qos1_packet_id_0", publish_pkt("t", "x", qos=1, pid=0), R_PACKET, "MQTT-2.3.1-1"),
    ("subscribe_without_filters", packet(0x82, b"\x00\x01"), R_PACKET, "MQTT-3.8.3-3"),
    ("subscribe_qos_3", subscribe_pkt(1, [("a", 3)]), R_QOS, "MQTT-3.8.3-4"),
    ("subscribe_reserved_option_bits", packet(0x82, b"\x00\x01" + mqtt_str("a") + b"\x04"),
     R_QOS + "|reserved", "MQTT-3.8.3-4"),
    ("unsubscribe_without_filters", packet(0xA2, b"\x00\x01"), R_PACKET, "MQTT-3.10.3-2"),
    ("string_longer_than_packet", packet(0x30, b"\x00\x10ab"), R_PACKET + "|utf-?8|string",
     "MQTT-1.5.3"),
    ("reserved_type_0", b"\x00\x00", R_PACKET + "|type", "MQTT-2.2.1"),
    ("auth_in_v311", b"\xf0\x00", R_PACKET + "|type", "MQTT-2.2.1"),
    ("connack_from_client", b"\x20\x02\x00\x00", R_PACKET + "|type", "MQTT-4.8"),
    ("second_connect", connect_pkt("again"), R_PACKET + "|second connect|connect twice",
     "MQTT-3.1.0-2"),
    ("oversize_publish", publish_pkt("big", b"x" * (MAX_PACKET + 100)), R_SIZE,
     "max_packet_size"),
    ("oversize_announced_only", b"\x30" + b"\xff\xff\xff\x7f" + b"\x00\x03abc", R_SIZE,
     "max_packet_size"),
]

def connect_with_flags(client_id, extra_flags):
    """A CONNECT with more Connect Flags bits set; byte 9 is the flags byte:
    10 len | 00 04 M Q T T | level | flags."""
    data = bytearray(connect_pkt(client_id))
    data[9] |= extra_flags
    return bytes(data)


# Sent as the first bytes of a connection, instead of CONNECT.
BEFORE_CONNECT = [
    # 'G' (0x47) reads as PUBACK with flags 0111: either reason is fine.
    ("http_request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
     R_PACKET + "|" + R_FLAGS + "|not connect|expected connect", "MQTT-3.1.0-1"),
    ("five_byte_length_connect", b"\x10\xff\xff\xff\xff\x01", R_LENGTH + "|" + R_SIZE,
     "MQTT-2.2.3"),
    ("connect_reserved_flag", connect_with_flags("rsv", 0x01), R_PACKET + "|" + R_FLAGS,
     "MQTT-3.1.2-3"),
    ("connect_bad_protocol_name", connect_pkt("pn", proto_name="MQTX"),
     R_PACKET + "|version|name", "MQTT-3.1.2-1"),
    ("connect_will_qos3", connect_pkt("wq", will=("w", b"x", 3, False)), R_QOS,
     "MQTT-3.1.2-14"),
    ("connect_fixed_flags", bytes([0x11]) + connect_pkt("ff")[1:], R_FLAGS, "MQTT-2.2.2-2"),
    ("connect_password_without_username", connect_pkt("pw", password="secret"),
     R_PACKET + "|password", "MQTT-3.1.2-22"),
    ("connect_will_qos_without_will", connect_with_flags("wq", 0x08), R_PACKET + "|" + R_QOS,
     "MQTT-3.1.2-13"),
    ("connect_will_retain_without_will", connect_with_flags("wr", 0x20), R_PACKET + "|retain",
     "MQTT-3.1.2-15"),
]


class MalformedTest(BrokerTestCase):
    LIMITS = {"max_packet_size": MAX_PACKET}

    def setUp(self):
        super().setUp()
        self.witness = self.raw("witness", keepalive=0)
        self.assertEqual(self.witness.subscribe([("witness/#", 1)]), [1])
        self.seq = 0

    def assert_witness_served(self):
        """The connected-throughout client still works: PINGRESP, and a
        publish from a fresh connection reaches it."""
        self.assert_broker_alive()
        self.witness.ping()
        self.seq += 1
        with RawClient(self.broker.port) as p:
            self.assertEqual(p.connect("witness-pub-%d" % self.seq), 0)
            p.publish("witness/%d" % self.seq, "alive", qos=1)
        got = self.witness.recv_publish()
        self.assertEqual(got.topic, "witness/%d" % self.seq)

    def run_case(self, name, data, reason, rule, connect_first):
        offset = self.broker.log_size()
        c = RawClient(self.broker.port)
        self.on_cleanup(c.close)
        if connect_first:
            self.assertEqual(c.connect("bad-" + name), 0)
            who = re.escape("bad-" + name)
        else:
            # No client id yet: wisp names the peer address, mosquitto says <unknown>.
            who = r"127\.0\.0\.1:%d\b|<unknown>" % c.sock.getsockname()[1]
        try:
            c.send(data)
        except OSError:
            pass  # closed while we were still sending: also a close
        try:
            pkt = c.recv_packet(3.0)
            # A CONNACK with a refusal code before the close is allowed.
            self.assertFalse(connect_first, "[%s] %s: broker answered %r" % (rule, name, pkt))
            self.assertEqual(pkt.name, "CONNACK", "[%s] %s: %r" % (rule, name, pkt))
            self.assertNotEqual(pkt.body[1:2], b"\x00", "[%s] %s accepted" % (rule, name))
            self.assertTrue(c.wait_closed(3.0), "[%s] %s: not closed" % (rule, name))
        except Closed:
            pass
        except socket.timeout:
            self.fail("[%s] %s: connection still open after 3 s" % (rule, name))
        c.close()
        # One line naming this connection, saying it ended, and why.
        # "bad socket read/write" is mosquitto's wording for some closes.
        verdict = (r"(?=.*(%s))(?=.*(disconnect|clos|drop|refus|reject|bad socket))(?=.*(%s))"
                   % (who, reason))
        line = self.broker.wait_log(verdict, offset)
        self.assertIsNotNone(line, "[%s] %s: no log line giving the reason (/%s/):\n%s"
                             % (rule, name, reason, self.broker.log_since(offset)))
        if os.environ.get("WISP_E2E_SHOW_REASONS"):
            sys.stderr.write("\n  %-32s %s" % (name, line))
        self.assert_witness_served()
        # Logged once per episode, not per read attempt (mosquitto writes a
        # detail line before the disconnect line, hence up to two).
        rx = re.compile(verdict, re.I)
        lines = [ln for ln in self.broker.log_since(offset).splitlines() if rx.search(ln)]
        self.assertLessEqual(len(lines), 2, "[%s] %s: reason logged %d times:\n%s"
                             % (rule, name, len(lines), "\n".join(lines[:10])))

    def test_malformed_after_connect(self):
        """Each malformed packet after CONNECT closes only its connection and
        is logged with the reason."""
        for name, data, reason, rule in AFTER_CONNECT:
            with self.subTest(case=name, rule=rule):
                self.run_case(name, data, reason, rule, connect_first=True)

    def test_malformed_instead_of_connect(self):
        """Garbage or a broken CONNECT as the first packet: closed (a refusal
        CONNACK first is allowed), logged, the broker keeps serving."""
        for name, data, reason, rule in BEFORE_CONNECT:
            with self.subTest(case=name, rule=rule):
                self.run_case(name, data, reason, rule, connect_first=False)

    @skip_unless_wisp("accepts non-minimal Remaining Length encodings (3.1.1 does not "
                      "forbid them; MQTT 5 [MQTT-1.5.5-1] does)")
    def test_overlong_remaining_length(self):
        """A Remaining Length in more bytes than needed (PINGREQ as c0 80 00)
        is malformed: wisp's codec requires the minimal encoding."""
        self.run_case("overlong_varint", b"\xc0\x80\x00", R_LENGTH, "MQTT-1.5.5-1", True)

    def test_valid_traffic_between_cases_is_unaffected(self):
        """A client that sends a valid packet split into single bytes (with
        pauses) is served: slow input is not malformed input."""
        c = self.raw("slow")
        data = subscribe_pkt(3, [("slow/t", 1)])
        for i in range(len(data)):
            c.send(data[i:i + 1])
            time.sleep(0.01)
        ack = c.expect(9)
        self.assertEqual((ack.pid, list(ack.body[2:])), (3, [1]))
        self.assert_witness_served()


class MemoryTest(BrokerTestCase):
    """max_packet_size and max_connect_size at the protocol's 256 MiB (wisp;
    mosquitto's default is unlimited), so a broker that allocates what the
    header announces would show it here.

    Resident memory (VmRSS) is what the brief names, but untouched pages of
    an up-front allocation are not resident: mosquitto 2.0.11 allocates the
    announced length at once (measured: VmData +25 GiB for 100 connections,
    VmRSS +0.5 MiB). So wisp is also held to its committed heap (VmData),
    which would take the host's memory as soon as a peer sends the bytes."""

    LIMITS = {} if IS_MOSQUITTO else {"max_packet_size": 268435460, "max_connect_size": 268435460}
    CONNECTIONS = 100
    RSS_LIMIT_KIB = 20 * 1024
    DATA_LIMIT_KIB = 512 * 1024

    def growth_kib(self, make_payload):
        """(VmRSS growth, VmData growth) while CONNECTIONS bogus connections
        are open, after a warm-up with the same traffic shape."""
        warm = [self.open_bogus(make_payload) for _ in range(5)]
        self.broker.wait_input_read()
        for c in warm:
            c.close()
        self.assert_broker_alive()
        rss0, data0 = self.broker.rss_kib(), self.broker.status_kib("VmData")
        conns = [self.open_bogus(make_payload) for _ in range(self.CONNECTIONS)]
        # Measured once the broker has read every byte that was sent: a
        # broker that had not read yet would otherwise look cheap.
        self.broker.wait_input_read()
        self.assert_broker_alive()
        rss1, data1 = self.broker.rss_kib(), self.broker.status_kib("VmData")
        for c in conns:
            c.close()
        return rss1 - rss0, data1 - data0

    def open_bogus(self, make_payload):
        s = socket.create_connection(("127.0.0.1", self.broker.port), timeout=5)
        self.on_cleanup(s.close)
        try:
            s.sendall(make_payload())
        except OSError:
            pass  # refused early: fine, that costs nothing
        return s

    def check_growth(self, make_payload):
        rss, data = self.growth_kib(make_payload)
        sys.stderr.write("[VmRSS +%d KiB, VmData +%d KiB] " % (rss, data))
        self.assertLess(rss, self.RSS_LIMIT_KIB, "VmRSS grew by %d KiB" % rss)
        if not IS_MOSQUITTO:  # see the class comment
            self.assertLess(data, self.DATA_LIMIT_KIB,
                            "VmData grew by %d KiB: memory allocated for announced, "
                            "unsent bytes" % data)
        s = self.raw("after-bogus")
        self.assertEqual(s.subscribe([("mem/t", 1)]), [1])
        p = self.raw("after-bogus-pub")
        p.publish("mem/t", "ok", qos=1)
        self.assertEqual(s.recv_publish().payload, b"ok")

    def test_huge_announced_connect_does_not_grow_memory(self):
        """100 connections each announcing a 256 MiB CONNECT and sending 1 KiB:
        VmRSS grows by less than 20 MiB (mosquitto's 01-bad-initial-packets),
        VmData by less than 512 MiB (wisp)."""
        self.check_growth(lambda: b"\x10\xff\xff\xff\x7f" + b"\x00" * 1024)

    def test_huge_announced_publish_does_not_grow_memory(self):
        """The same after a valid CONNECT: a PUBLISH announcing 256 MiB."""
        self.check_growth(lambda: (connect_pkt("", keepalive=0) + b"\x30\xff\xff\xff\x7f"
                                   + mqtt_str("big/t") + b"\x00" * 1024))


class GarbageTest(BrokerTestCase):
    LIMITS = {"max_packet_size": 65536}
    ROUNDS = 1000
    SEED = 0x5749_5350  # "WISP": fixed, so a failure can be replayed

    def test_random_garbage_never_kills_the_broker(self):
        """1000 seeded random buffers over fresh connections (half of them
        after a valid CONNECT, some starting with a real packet type byte):
        the broker survives and the witness is still served."""
        rng = random.Random(self.SEED)
        witness = self.raw("witness", keepalive=0)
        self.assertEqual(witness.subscribe([("g/#", 1)]), [1])
        for i in range(self.ROUNDS):
            size = rng.choice((1, 2, 3, 5, 8, 16, 64, 300, 2000))
            data = bytes(rng.getrandbits(8) for _ in range(size))
            if rng.random() < 0.5:
                # A plausible header makes the body reach the packet parsers.
                first = rng.choice((0x10, 0x30, 0x32, 0x34, 0x62, 0x82, 0xA2, 0xC0, 0xE0))
                data = bytes([first]) + data[1:]
            if rng.random() < 0.5:
                data = connect_pkt("g%d" % i, keepalive=0) + data
            try:
                with socket.create_connection(("127.0.0.1", self.broker.port), timeout=5) as s:
                    s.sendall(data)
                    # Every 10th round waits for the broker's verdict, so it
                    # reads everything; the rest close at once (reset races).
                    if i % 10 == 0:
                        s.settimeout(0.2)
                        try:
                            while s.recv(4096):
                                pass
                        except (socket.timeout, ConnectionResetError):
                            pass
            except OSError as e:
                self.assertTrue(self.broker.alive(), "broker died at round %d (%s)" % (i, e))
            if i % 100 == 99:
                self.assert_broker_alive()
                witness.ping()
        self.assert_broker_alive()
        witness.ping()
        with RawClient(self.broker.port) as p:
            self.assertEqual(p.connect("after-garbage"), 0)
            p.publish("g/end", "end", qos=1)
        # Garbage that happened to form a valid PUBLISH on g/# may arrive first.
        for _ in range(50):
            if witness.recv_publish().topic == "g/end":
                break
        else:
            self.fail("g/end never reached the witness")


if __name__ == "__main__":
    main()
