#!/usr/bin/python3
"""16 v5 CONNECT/CONNACK and server DISCONNECT: every refusal and every
close the broker causes is answered with its MQTT 5 reason code (the one
reason table, broker/src/session/reason.h), where 3.1.1 gets its return
code or a plain close. Raw packets, so the bytes are checked exactly."""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import signal  # noqa: E402
import unittest  # noqa: E402

from wisp_e2e import (CONNACK, DISCONNECT, MOSQUITTO_BIN, MOSQUITTO_PUB, MOSQUITTO_SUB,  # noqa: E402
                      PUBLISH, REPO_ROOT, Broker, BrokerTestCase, RawClient, free_port,
                      keepalive_close_bound, main, mqtt_str, packet, skip_unless_wisp)


def v5_props(props=b""):
    return bytes([len(props)]) + props


def connect5(client_id="", clean=True, keepalive=60, props=b"", will=None,
             username=None, password=None):
    """A v5 CONNECT; will = (topic, payload, qos, retain, will props)."""
    flags = 0x02 if clean else 0
    payload = mqtt_str(client_id)
    if will is not None:
        wtopic, wpayload, wqos, wretain, wprops = will
        flags |= 0x04 | (wqos << 3) | (0x20 if wretain else 0)
        payload += v5_props(wprops) + mqtt_str(wtopic) + mqtt_str(wpayload)
    if username is not None:
        flags |= 0x80
        payload += mqtt_str(username)
    if password is not None:
        flags |= 0x40
        payload += mqtt_str(password)
    var = mqtt_str("MQTT") + bytes([5, flags]) + struct.pack("!H", keepalive) + v5_props(props)
    return packet(0x10, var + payload)


def disconnect5(reason, props=b""):
    return packet(0xE0, bytes([reason]) + v5_props(props))


def publish5(topic, payload=b"", qos=0, retain=False, pid=1, props=b""):
    if isinstance(payload, str):
        payload = payload.encode()
    body = mqtt_str(topic) + (struct.pack("!H", pid) if qos else b"") + v5_props(props) + payload
    return packet(0x30 | (qos << 1) | (1 if retain else 0), body)


def subscribe5(pid, flt, options=0):
    return packet(0x82, struct.pack("!H", pid) + v5_props() + mqtt_str(flt) + bytes([options]))


def expiry_prop(seconds):
    return b"\x11" + struct.pack("!I", seconds)


def will_delay_prop(seconds):
    return b"\x18" + struct.pack("!I", seconds)


def alias_prop(alias):
    return b"\x23" + struct.pack("!H", alias)


# CONNACK of Mosquitto 2.0.11 (max_inflight_messages 20, max_packet_size
# 1048576, defaults otherwise) for CONNECT "abc", keep alive 60: Topic Alias
# Maximum 10, Maximum Packet Size 1048576, Receive Maximum 20, in that order.
MOSQUITTO_CONNACK = bytes.fromhex("200e00000b22000a2700100000210014")


class V5Client(RawClient):
    def connect5(self, client_id, **kw):
        """Sends a v5 CONNECT; returns (session present, reason code, properties)."""
        self.send(connect5(client_id, **kw))
        ack = self.expect(CONNACK)
        return bool(ack.body[0] & 1), ack.body[1], ack.body[3:3 + ack.body[2]]

    def connack5(self, client_id, **kw):
        """Sends a v5 CONNECT; returns the whole CONNACK packet's bytes."""
        self.send(connect5(client_id, **kw))
        ack = self.expect(CONNACK)
        return bytes([ack.first]) + bytes([len(ack.body)]) + ack.body

    def subscribe5(self, flt, qos=0, pid=1):
        self.send(subscribe5(pid, flt, qos))
        ack = self.expect(9)
        return list(ack.body[3:])

    def recv_publish5(self, timeout=None):
        """(topic, properties, payload) of the next PUBLISH (QoS 0)."""
        pkt = self.expect(PUBLISH, timeout)
        (tlen,) = struct.unpack("!H", pkt.body[:2])
        pos = 2 + tlen + (2 if pkt.qos else 0)
        plen = pkt.body[pos]
        return pkt.body[2:2 + tlen].decode(), pkt.body[pos + 1:pos + 1 + plen], pkt.body[pos + 1 + plen:]

    def expect_disconnect(self, reason):
        """[MQTT-3.14.2.1] the server's DISCONNECT names the reason, then the
        connection closes."""
        pkt = self.expect(DISCONNECT)
        if pkt.body[:1] != bytes([reason]):
            raise AssertionError("DISCONNECT reason %r, want %#x" % (pkt.body, reason))
        if not self.wait_closed():
            raise AssertionError("connection still open after DISCONNECT")


class ReasonCodeTest(BrokerTestCase):

    def v5(self):
        c = V5Client(self.broker.port)
        self.on_cleanup(c.close)
        return c

    def test_refusal_has_v5_code_and_no_session(self):
        """[MQTT-3.2.2-6][MQTT-3.2.2-7] a refusing v5 CONNACK carries a v5
        reason code (0x8C Bad authentication method for a method the broker
        does not offer, where 3.1.1 has no code), session present 0 with
        Clean Start 0, and the connection closes; the 3.1.1 client refused
        for an empty id without clean session still gets return code 2."""
        c = self.v5()
        present, code, _ = c.connect5("refused", clean=False,
                                      props=b"\x11\x00\x00\x00\x3c\x15\x00\x04SCRA")
        self.assertEqual((present, code), (False, 0x8C))
        self.assertTrue(c.wait_closed())
        old = self.raw(connect=False)
        self.assertEqual(old.connect("", clean=False), 2)

    def test_empty_id_without_clean_start_accepted(self):
        """[MQTT-3.1.3-6][MQTT-3.1.3-7] v5 dropped 3.1.1's condition on an
        empty client id (clean session, else CONNACK 2): with Clean Start 0
        it is accepted and assigned an id, as Mosquitto does and Paho's
        client_test5 expects; 3.1.1 still refuses it with 2 [MQTT-3.1.3-8]."""
        present, code, props = self.v5().connect5("", clean=False)
        self.assertEqual((present, code), (False, 0))
        self.assertIn(b"\x12\x00", props)
        self.assertEqual(self.raw(connect=False).connect("", clean=False), 2)

    def test_keepalive_timeout_disconnect_0x8d(self):
        """[MQTT-3.1.2-22] a v5 client silent for 1.5 keep-alive periods
        gets DISCONNECT 0x8D (Keep Alive timeout) before the close."""
        c = self.v5()
        self.assertEqual(c.connect5("ka5", keepalive=1)[1], 0)
        c.timeout = keepalive_close_bound(1)
        c.expect_disconnect(0x8D)

    def test_takeover_disconnect_0x8e(self):
        """[MQTT-3.1.4-3] the connection a new CONNECT with the same client id
        takes over gets DISCONNECT 0x8E (Session taken over)."""
        first = self.v5()
        self.assertEqual(first.connect5("twin")[1], 0)
        second = self.v5()
        self.assertEqual(second.connect5("twin")[1], 0)
        first.expect_disconnect(0x8E)
        self.assertTrue(second.is_open())

    def test_second_connect_disconnect_0x82(self):
        """[MQTT-3.1.0-2] a second CONNECT is a Protocol Error: DISCONNECT 0x82."""
        c = self.v5()
        self.assertEqual(c.connect5("again")[1], 0)
        c.send(connect5("again"))
        c.expect_disconnect(0x82)

    def test_property_not_for_the_packet_disconnect_0x81(self):
        """Section 2.2.2.2: an identifier not valid for its packet type (or
        no property at all) makes a Malformed Packet: DISCONNECT 0x81; a
        property given twice is a Protocol Error: 0x82."""
        for props, reason in ((b"\x11\x00\x00\x00\x01", 0x81),  # Session Expiry in a PUBLISH
                              (b"\x50\x00", 0x81),  # no property 0x50
                              (b"\x01\x00\x01\x00", 0x82)):  # Payload Format twice
            c = self.v5()
            self.assertEqual(c.connect5("props")[1], 0)
            c.send(publish5("p/t", b"x", props=props))
            c.expect_disconnect(reason)

    def test_disconnect_0x04_publishes_the_will(self):
        """[MQTT-3.14.4-3] DISCONNECT with reason 0x04 (Disconnect with Will
        Message) publishes the will; a normal DISCONNECT (0x00) does not."""
        w = self.raw("will-watch")
        self.assertEqual(w.subscribe([("will/#", 0)]), [0])
        quiet = self.v5()
        self.assertEqual(quiet.connect5("quiet", will=("will/quiet", b"q", 0, False, b""))[1], 0)
        quiet.send(disconnect5(0x00))
        self.assertTrue(quiet.wait_closed())
        c = self.v5()
        self.assertEqual(c.connect5("leaver", will=("will/leaver", b"bye", 0, False, b""))[1], 0)
        c.send(disconnect5(0x04))
        got = w.recv_publish()
        self.assertEqual((got.topic, got.payload), ("will/leaver", b"bye"))

    def test_shutdown_disconnect_0x8b(self):
        """A broker shutting down sends DISCONNECT 0x8B (Server shutting down)
        to its v5 clients [MQTT-3.14.2.1]."""
        c = self.v5()
        self.assertEqual(c.connect5("stay")[1], 0)
        self.broker.stop()
        c.expect_disconnect(0x8B)


def connack_props(ack):
    """{property id: raw value bytes} of a CONNACK's bytes (ids seen once)."""
    plen = ack[4]
    props, pos, out, order = ack[5:5 + plen], 0, {}, []
    sizes = {0x22: 2, 0x13: 2, 0x25: 1, 0x27: 4, 0x21: 2, 0x24: 1}
    while pos < len(props):
        pid = props[pos]
        pos += 1
        if pid == 0x12:
            (n,) = struct.unpack("!H", props[pos:pos + 2])
            out[pid] = props[pos + 2:pos + 2 + n]
            pos += 2 + n
        else:
            out[pid] = props[pos:pos + sizes[pid]]
            pos += sizes[pid]
        order.append(pid)
    return out, order


class V5Case(BrokerTestCase):
    def v5(self, client_id=None, **kw):
        """A V5Client; connected (reason code 0 asserted) when client_id is given."""
        c = V5Client(self.broker.port)
        self.on_cleanup(c.close)
        if client_id is not None:
            self.assertEqual(c.connect5(client_id, **kw)[1], 0, "CONNACK reason code")
        return c


@skip_unless_wisp("the CONNACK bytes are compared with Mosquitto's")
class ConnackTest(V5Case):

    LIMITS = {"max_inflight": 20, "max_packet_size": 1048576}

    def test_connack_properties_as_mosquitto(self):
        """[MQTT-3.2.2.3] CONNACK announces Topic Alias Maximum (10),
        Maximum Packet Size and Receive Maximum (limits.max_inflight), in
        Mosquitto 2.0.11's order, byte for byte what Mosquitto sends."""
        self.assertEqual(self.v5().connack5("abc", keepalive=60), MOSQUITTO_CONNACK)

    def test_mosquitto_sends_the_same_bytes(self):
        """The recorded bytes are Mosquitto 2.0.11's, asked live when it is
        installed (same limits, loopback port)."""
        if not os.access(MOSQUITTO_BIN, os.X_OK):
            self.skipTest("no mosquitto at %s" % MOSQUITTO_BIN)
        port = free_port()
        d = tempfile.mkdtemp()
        self.on_cleanup(lambda: shutil.rmtree(d, ignore_errors=True))
        conf = os.path.join(d, "m.conf")
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 20\n"
                    "max_packet_size 1048576\npersistence false\n" % port)
        proc = subprocess.Popen([MOSQUITTO_BIN, "-c", conf], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.on_cleanup(lambda: (proc.terminate(), proc.wait(10)))
        deadline = time.monotonic() + 10
        while True:
            try:
                c = V5Client(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.on_cleanup(c.close)
        self.assertEqual(c.connack5("abc", keepalive=60), MOSQUITTO_CONNACK)

    def test_assigned_id_and_server_keepalive(self):
        """[MQTT-3.2.2-16] an empty client id gets an Assigned Client
        Identifier; [MQTT-3.2.2-21] keep alive 0 gets Server Keep Alive
        (limits.max_keepalive, 65535). Order as Mosquitto: 0x22, 0x13, 0x12,
        0x27, 0x21."""
        ack = self.v5().connack5("", keepalive=0)
        props, order = connack_props(ack)
        self.assertEqual(order, [0x22, 0x13, 0x12, 0x27, 0x21])
        self.assertEqual(props[0x13], b"\xff\xff")
        self.assertTrue(props[0x12].startswith(b"auto-"), props[0x12])

    def test_unknown_authentication_method_0x8c(self):
        """A CONNECT naming an authentication method the broker does not
        offer gets CONNACK 0x8C (Bad authentication method) and no session,
        as Mosquitto answers it (20 03 00 8c 00)."""
        c = self.v5()
        self.assertEqual(c.connack5("x", props=b"\x15\x00\x04SCRA"), bytes.fromhex("2003008c00"))
        self.assertTrue(c.wait_closed())


@skip_unless_wisp("limits.max_qos and retain_available are wisp's keys")
class LimitedServerTest(V5Case):

    LIMITS = {"max_inflight": 20, "max_packet_size": 1048576, "max_qos": 1, "retain_available": False,
              "max_keepalive": 30}

    def test_connack_announces_retain_and_qos(self):
        """[MQTT-3.2.2-9][MQTT-3.2.2-10] Retain Available 0 and Maximum QoS 1
        in CONNACK, where Mosquitto puts them (its bytes with retain_available
        false, max_qos 1); a keep alive over max_keepalive becomes Server Keep
        Alive 30 [MQTT-3.2.2-21]."""
        self.assertEqual(self.v5().connack5("abc", keepalive=60),
                         bytes.fromhex("201500001222000a13001e2500270010000021001424" "01"))

    def test_publish_over_max_qos_disconnect_0x9b(self):
        """[MQTT-3.2.2-11] a PUBLISH over Maximum QoS: DISCONNECT 0x9B."""
        c = self.v5("q2")
        c.send(publish5("t", b"x", qos=2, pid=5))
        c.expect_disconnect(0x9B)

    def test_retained_publish_disconnect_0x9a(self):
        """[MQTT-3.2.2-14] a retained PUBLISH while retain is unavailable:
        DISCONNECT 0x9A."""
        c = self.v5("r")
        c.send(publish5("t", b"x", retain=True))
        c.expect_disconnect(0x9A)

    def test_will_over_max_qos_refused_0x9b(self):
        """[MQTT-3.2.2-12] a will QoS over Maximum QoS: CONNACK 0x9B."""
        c = self.v5()
        self.assertEqual(c.connect5("w", will=("w/t", b"x", 2, False, b""))[1], 0x9B)

    def test_subscription_granted_at_max_qos(self):
        """[MQTT-3.2.2-10] a SUBSCRIBE asking QoS 2 is granted Maximum QoS 1
        (v5 and 3.1.1), and deliveries come at most at QoS 1."""
        c = self.v5("sub-q")
        self.assertEqual(c.subscribe5("g/t", 2), [1])
        old = self.raw("sub-q-311", keepalive=10)
        self.assertEqual(old.subscribe([("g/t", 2)]), [1])

    def test_3_1_1_keepalive_over_max_still_refused(self):
        """3.1.1 has no Server Keep Alive: over max_keepalive is still CONNACK 2."""
        self.assertEqual(self.raw(connect=False).connect("old", keepalive=60), 2)


class SessionExpiryTest(V5Case):

    def test_clean_start_0_without_expiry_is_not_kept(self):
        """[MQTT-3.1.2-23] without a Session Expiry Interval (0) the session
        ends with the connection, Clean Start 0 or not: the next CONNECT
        finds none (session present 0)."""
        c = self.v5("brief", clean=False)
        self.assertEqual(c.subscribe5("a/b", 1), [1])
        c.send(disconnect5(0))
        self.assertTrue(c.wait_closed())
        self.assertEqual(self.v5().connect5("brief", clean=False)[:2], (False, 0))

    def test_expiry_keeps_the_session_then_a_timer_ends_it(self):
        """[MQTT-3.1.2-11] a session with an expiry interval is kept while
        offline (present 1 on reconnect) and ends when it runs out, by a
        timer (logged), after which a CONNECT finds none."""
        c = self.v5("keeper", clean=False, props=expiry_prop(1))
        self.assertEqual(c.subscribe5("a/b", 1), [1])
        c.close()
        again = self.v5()
        self.assertEqual(again.connect5("keeper", clean=False, props=expiry_prop(1))[:2], (True, 0))
        off = self.broker.log_size()
        again.close()
        self.assertIsNotNone(self.broker.wait_log(r"session keeper expired", off, timeout=5))
        self.assertEqual(self.v5().connect5("keeper", clean=False, props=expiry_prop(1))[:2], (False, 0))

    def test_disconnect_cannot_set_expiry_after_zero(self):
        """[MQTT-3.14.2-2] a DISCONNECT setting a non-zero expiry after
        CONNECT had 0 is a protocol error: DISCONNECT 0x82."""
        c = self.v5("zero")
        c.send(disconnect5(0, expiry_prop(60)))
        c.expect_disconnect(0x82)

    def test_disconnect_expiry_0_ends_the_session(self):
        """Section 3.14.2.2.2: DISCONNECT may set the expiry to 0, and the
        session ends with the connection."""
        c = self.v5("ender", clean=False, props=expiry_prop(600))
        self.assertEqual(c.subscribe5("a/b", 1), [1])
        c.send(disconnect5(0, expiry_prop(0)))
        self.assertTrue(c.wait_closed())
        self.assertEqual(self.v5().connect5("ender", clean=False, props=expiry_prop(600))[:2], (False, 0))


@skip_unless_wisp("limits.max_session_expiry is wisp's key")
class SessionExpiryBoundTest(V5Case):

    LIMITS = {"max_session_expiry": 1}

    def test_bound_applies_to_v5_and_3_1_1(self):
        """limits.max_session_expiry (Mosquitto's persistent_client_expiration):
        a v5 session asking "never" (0xFFFFFFFF) and a 3.1.1 persistent
        session both end 1 s after going offline, by the timer."""
        v5 = self.v5()
        present, code, props = v5.connect5("forever5", clean=False, props=expiry_prop(0xFFFFFFFF))
        self.assertEqual((present, code), (False, 0))
        # MQTT 5, 3.2.2.3.2: the CONNACK says the interval used (1), last.
        self.assertTrue(props.endswith(b"\x11\x00\x00\x00\x01"), props)
        self.assertEqual(v5.subscribe5("b/t", 1), [1])
        old = self.raw("forever311", clean=False)
        self.assertEqual(old.subscribe([("b/t", 1)]), [1])
        off = self.broker.log_size()
        v5.close()
        old.close()
        self.assertIsNotNone(self.broker.wait_log(r"session forever5 expired", off, timeout=5))
        self.assertIsNotNone(self.broker.wait_log(r"session forever311 expired", off, timeout=5))
        self.assertEqual(self.v5().connect5("forever5", clean=False, props=expiry_prop(60))[:2], (False, 0))
        again = self.raw(connect=False)
        self.assertEqual(again.connect("forever311", clean=False), 0)
        self.assertFalse(again.session_present)


class WillDelayTest(V5Case):

    def watcher(self):
        w = self.raw("will-watch")
        self.assertEqual(w.subscribe([("will/#", 0)]), [0])
        return w

    def test_will_waits_for_its_delay(self):
        """[MQTT-3.1.3-9] the will is published when the Will Delay Interval
        has passed (the session outliving it)."""
        w = self.watcher()
        c = self.v5("late", props=expiry_prop(60),
                    will=("will/late", b"gone", 0, False, will_delay_prop(1)))
        c.close()
        w.assert_no_packet(0.3)
        got = w.recv_publish(timeout=5)
        self.assertEqual((got.topic, got.payload), ("will/late", b"gone"))

    def test_reconnect_within_the_delay_cancels_the_will(self):
        """[MQTT-3.1.3-9] a new connection to the session before the delay
        has passed: the will is never published."""
        w = self.watcher()
        c = self.v5("back", clean=False, props=expiry_prop(60),
                    will=("will/back", b"gone", 0, False, will_delay_prop(2)))
        c.close()
        again = self.v5()
        self.assertEqual(again.connect5("back", clean=False, props=expiry_prop(60))[:2], (True, 0))
        w.assert_no_packet(3)

    def test_will_properties_reach_the_subscriber(self):
        """Will properties (MQTT 5, 3.1.3.2) go to a v5 subscriber as a
        PUBLISH's would, in order (Content Type, User Property); the Will
        Delay Interval is not forwarded."""
        w = self.v5("props-watch")
        self.assertEqual(w.subscribe5("will/#"), [0])
        wprops = (will_delay_prop(0) + b"\x03\x00\x04text" + b"\x26\x00\x01k\x00\x01v")
        c = self.v5("props", will=("will/props", b"gone", 0, False, wprops))
        c.close()
        topic, props, payload = w.recv_publish5(timeout=5)
        self.assertEqual((topic, payload), ("will/props", b"gone"))
        self.assertEqual(props, b"\x03\x00\x04text\x26\x00\x01k\x00\x01v")

    def test_session_end_publishes_the_will_before_its_delay(self):
        """[MQTT-3.1.3-9] the will goes out at the earlier of its delay and
        the session's end: with session expiry 0, at once."""
        w = self.watcher()
        c = self.v5("soon", will=("will/soon", b"now", 0, False, will_delay_prop(600)))
        c.close()
        got = w.recv_publish(timeout=5)
        self.assertEqual(got.topic, "will/soon")


class ReceiveMaximumTest(V5Case):

    def test_client_receive_maximum_bounds_what_is_sent(self):
        """[MQTT-3.3.4-9] with Receive Maximum 1 in its CONNECT, a v5
        subscriber has at most one unacknowledged QoS 1 PUBLISH: the next
        comes after its PUBACK."""
        sub = self.v5("rm1", props=b"\x21\x00\x01")
        self.assertEqual(sub.subscribe5("rm/t", 1), [1])
        pub = self.raw("rm-pub")
        for i in range(3):
            pub.publish("rm/t", b"m%d" % i, qos=1, pid=1 + i)
        got = []
        for i in range(3):
            pkt = sub.expect(PUBLISH)
            got.append(pkt.body[-2:])
            sub.assert_no_packet(0.3)  # nothing more until the PUBACK
            sub.send(packet(0x40, struct.pack("!H", pkt.pid)))
        self.assertEqual(got, [b"m0", b"m1", b"m2"])


class InboundReceiveMaximumTest(V5Case):

    LIMITS = {"max_inflight": 2}

    def test_client_over_receive_maximum_disconnect_0x93(self):
        """[MQTT-3.3.4-8] a v5 client sending more QoS 2 PUBLISHes than the
        announced Receive Maximum (2) without completing them gets
        DISCONNECT 0x93 (Receive Maximum exceeded)."""
        c = self.v5("rm-over")
        c.send(publish5("x/t", b"1", qos=2, pid=1))
        c.expect(5)  # PUBREC
        c.send(publish5("x/t", b"2", qos=2, pid=2))
        c.expect(5)
        c.send(publish5("x/t", b"3", qos=2, pid=3))
        c.expect_disconnect(0x93)


class ClientMaximumPacketSizeTest(V5Case):

    def test_larger_messages_dropped_for_that_client_alone(self):
        """[MQTT-3.1.2-25] a PUBLISH larger than the Maximum Packet Size in a
        v5 client's CONNECT is not sent to it (dropped for it alone); a
        client without the limit gets it, and smaller ones still reach the
        first."""
        small = self.v5("mps-small", props=b"\x27\x00\x00\x00\x20")  # 32 bytes
        self.assertEqual(small.subscribe5("mp/t"), [0])
        big = self.v5("mps-any")
        self.assertEqual(big.subscribe5("mp/t"), [0])
        pub = self.raw("mps-pub")
        pub.publish("mp/t", b"x" * 100)
        pub.publish("mp/t", b"ok")
        self.assertEqual(big.recv_publish5()[2], b"x" * 100)
        self.assertEqual(big.recv_publish5()[2], b"ok")
        self.assertEqual(small.recv_publish5()[2], b"ok")  # the large one never came


class TopicAliasTest(V5Case):

    def test_inbound_aliases(self):
        """[MQTT-3.3.2-12] a PUBLISH with a topic and a Topic Alias sets it;
        one with an empty topic and the alias uses it. Subscribers get the
        topic."""
        sub = self.v5("alias-sub")
        self.assertEqual(sub.subscribe5("al/#"), [0])
        pub = self.v5("alias-pub")
        pub.send(publish5("al/one", b"1", props=alias_prop(1)))
        pub.send(publish5("", b"2", props=alias_prop(1)))
        self.assertEqual(sub.recv_publish5()[0::2], ("al/one", b"1"))
        self.assertEqual(sub.recv_publish5()[0::2], ("al/one", b"2"))

    def test_alias_over_maximum_disconnect_0x94(self):
        """[MQTT-3.3.2-9] an alias over Topic Alias Maximum (10): DISCONNECT 0x94."""
        c = self.v5("alias-big")
        c.send(publish5("t", b"x", props=alias_prop(11)))
        c.expect_disconnect(0x94)

    def test_unknown_alias_protocol_error(self):
        """An empty topic with an alias this connection never set is a
        Protocol Error: DISCONNECT 0x82."""
        c = self.v5("alias-unknown")
        c.send(publish5("", b"x", props=alias_prop(3)))
        c.expect_disconnect(0x82)


class PahoV5Test(BrokerTestCase):

    def test_paho_v5_connack_and_session_expiry(self):
        """paho-mqtt (MQTTv5) reads the CONNACK properties and keeps a
        session across a reconnect with a Session Expiry Interval."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        import queue
        acks = queue.Queue()
        c = mqtt.Client(client_id="paho5", protocol=mqtt.MQTTv5)
        c.on_connect = lambda cl, ud, flags, rc, props: acks.put((flags, rc, props))
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 60
        c.connect("127.0.0.1", self.broker.port, keepalive=30, clean_start=False, properties=props)
        c.loop_start()
        self.on_cleanup(c.loop_stop)
        flags, rc, cprops = acks.get(timeout=5)
        self.assertEqual(rc, 0)
        self.assertEqual(cprops.TopicAliasMaximum, 10)
        self.assertEqual(cprops.ReceiveMaximum, 20)
        c.disconnect()
        c.loop_stop()
        c.connect("127.0.0.1", self.broker.port, keepalive=30, clean_start=False, properties=props)
        c.loop_start()
        flags, rc, _ = acks.get(timeout=5)
        self.assertEqual((rc, flags.get("session present")), (0, 1))
        c.disconnect()


class MosquittoClientsV5Test(BrokerTestCase):

    def run_tool(self, argv, timeout=10):
        cp = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
        return cp.returncode, cp.stdout.decode(errors="replace"), cp.stderr.decode(errors="replace")

    def test_mosquitto_sub_v5_session_expiry(self):
        """mosquitto_sub -V 5 -c -x 60 keeps its session: a QoS 1 message
        published while it is away (mosquitto_pub -V 5) is delivered when it
        comes back [MQTT-3.1.2-11]; with -x 0 nothing is kept."""
        base = ["-h", "127.0.0.1", "-p", str(self.broker.port), "-V", "5", "-q", "1"]
        sub = [MOSQUITTO_SUB] + base + ["-c", "-i", "msub5", "-t", "m/t"]
        rc, _, err = self.run_tool(sub + ["-x", "60", "-E"])
        self.assertEqual(rc, 0, err)
        rc, _, err = self.run_tool([MOSQUITTO_PUB] + base + ["-t", "m/t", "-m", "while-away"])
        self.assertEqual(rc, 0, err)
        rc, out, err = self.run_tool(sub + ["-x", "60", "-C", "1", "-W", "5"])
        self.assertEqual((rc, out.strip()), (0, "while-away"), err)
        # Expiry 0: the session ends with the connection, so nothing waits.
        rc, _, err = self.run_tool(sub + ["-x", "0", "-E"])
        self.assertEqual(rc, 0, err)
        self.run_tool([MOSQUITTO_PUB] + base + ["-t", "m/t", "-m", "lost"])
        rc, out, _ = self.run_tool(sub + ["-x", "0", "-C", "1", "-W", "2"])
        self.assertNotIn("lost", out)


MQTTJS_SCRIPT = r"""
const mqtt = require('mqtt');
const port = Number(process.argv[process.argv.length - 1]);
const out = {};
const sub = mqtt.connect({host: '127.0.0.1', port, protocolVersion: 5, clientId: 'js-sub'});
sub.on('connect', (ack) => {
  out.connack = ack.properties || {};
  sub.subscribe('js/t', {qos: 0}, () => {
    const pub = mqtt.connect({host: '127.0.0.1', port, protocolVersion: 5, clientId: 'js-pub'});
    pub.on('connect', () => {
      pub.publish('js/t', 'one', {properties: {topicAlias: 1}});
      pub.publish('', 'two', {properties: {topicAlias: 1}});
    });
    const got = [];
    sub.on('message', (topic, payload) => {
      got.push([topic, payload.toString()]);
      if (got.length === 2) {
        out.got = got;
        console.log(JSON.stringify(out));
        pub.end(); sub.end();
      }
    });
  });
});
setTimeout(() => { console.log(JSON.stringify(out)); process.exit(1); }, 8000).unref();
"""


class MqttJsV5Test(BrokerTestCase):

    def test_mqtt_js_v5_connack_and_topic_alias(self):
        """MQTT.js 5 (protocolVersion 5) reads Topic Alias Maximum 10 and
        Receive Maximum 20 from CONNACK, and its PUBLISHes with a topic alias
        (set, then used with an empty topic) reach the subscriber with the
        topic [MQTT-3.3.2-12]."""
        node = shutil.which("node")
        modules = os.path.join(REPO_ROOT, "tests", "js", "node_modules")
        if not node or not os.path.isdir(os.path.join(modules, "mqtt")):
            self.skipTest("node or tests/js/node_modules (npm ci --prefix tests/js) missing")
        cp = subprocess.run([node, "-e", MQTTJS_SCRIPT, str(self.broker.port)], capture_output=True,
                            timeout=20, env=dict(os.environ, NODE_PATH=modules))
        self.assertEqual(cp.returncode, 0, cp.stdout.decode() + cp.stderr.decode())
        out = json.loads(cp.stdout.decode().strip().splitlines()[-1])
        self.assertEqual(out["connack"].get("topicAliasMaximum"), 10)
        self.assertEqual(out["connack"].get("receiveMaximum"), 20)
        self.assertEqual(out["got"], [["js/t", "one"], ["js/t", "two"]])


@skip_unless_wisp("restarts wisp on its own store")
class SessionDurabilityTest(unittest.TestCase):
    """The v5 Session Expiry Interval survives a restart and kill -9 (in
    SESSION_PUT, docs/persistence.md), including a change at DISCONNECT."""

    def setUp(self):
        self.data = tempfile.mkdtemp(prefix="wisp-v5-")
        self.brokers = []

    def tearDown(self):
        for b in self.brokers:
            if b.alive():
                b.stop()
            b.cleanup()
        shutil.rmtree(self.data, ignore_errors=True)

    def start(self):
        b = Broker(config={"persistence": {"enabled": True, "dir": self.data}})
        self.brokers.append(b)
        b.start()
        return b

    def client(self, b):
        c = V5Client(b.port)
        self.addCleanup(c.close)
        return c

    def test_disconnect_expiry_survives_kill_9(self):
        """The expiry a DISCONNECT set (section 3.14.2.2.2) is in the store:
        after kill -9 the restored session expires by its timer, 2 s after
        the restart (not after the 600 s of its CONNECT), and a CONNECT then
        finds no session."""
        b = self.start()
        c = self.client(b)
        self.assertEqual(c.connect5("dur", clean=False, props=expiry_prop(600))[:2], (False, 0))
        self.assertEqual(c.subscribe5("d/t", 1), [1])
        c.send(disconnect5(0, expiry_prop(2)))
        self.assertTrue(c.wait_closed())
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(10)
        b2 = self.start()
        self.assertIsNotNone(b2.wait_log(r"session dur expired", 0, timeout=6))
        self.assertEqual(self.client(b2).connect5("dur", clean=False, props=expiry_prop(60))[:2],
                         (False, 0))

    def test_kept_session_resumes_after_kill_9(self):
        """Within its expiry a restored v5 session resumes (present 1) and its
        subscription delivers."""
        b = self.start()
        c = self.client(b)
        self.assertEqual(c.connect5("back5", clean=False, props=expiry_prop(60))[1], 0)
        self.assertEqual(c.subscribe5("k/t", 1), [1])
        c.send(disconnect5(0))
        self.assertTrue(c.wait_closed())
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(10)
        b2 = self.start()
        again = self.client(b2)
        self.assertEqual(again.connect5("back5", clean=False, props=expiry_prop(60))[:2], (True, 0))
        pub = self.client(b2)
        self.assertEqual(pub.connect5("back5-pub")[1], 0)
        pub.send(publish5("k/t", b"kept"))
        self.assertEqual(again.recv_publish5()[0::2], ("k/t", b"kept"))

    def test_will_survives_kill_9(self):
        """A v5 persistent session's will (with its delay and properties)
        is in the store: after kill -9 the restarted broker publishes it
        once its Will Delay Interval has passed, counted from the restart,
        with its properties [MQTT-3.1.3-9]; a client that comes back in
        time cancels it."""
        b = self.start()
        gone = self.client(b)
        wprops = will_delay_prop(1) + b"\x03\x00\x04text"
        self.assertEqual(gone.connect5("w-gone", clean=False, props=expiry_prop(60),
                                       will=("will/gone", b"bye", 0, False, wprops))[1], 0)
        back = self.client(b)
        self.assertEqual(back.connect5("w-back", clean=False, props=expiry_prop(60),
                                       will=("will/back", b"bye", 0, False, will_delay_prop(3)))[1], 0)
        gone.ping()
        back.ping()  # both CONNECTs handled: their records are written
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(10)
        b2 = self.start()
        w = self.client(b2)
        self.assertEqual(w.connect5("w-watch")[1], 0)
        self.assertEqual(w.subscribe5("will/#"), [0])
        again = self.client(b2)
        self.assertEqual(again.connect5("w-back", clean=False, props=expiry_prop(60))[:2], (True, 0))
        topic, props, payload = w.recv_publish5(timeout=5)
        self.assertEqual((topic, props, payload), ("will/gone", b"\x03\x00\x04text", b"bye"))
        w.assert_no_packet(3.5)  # w-back came back within its delay

    def test_disconnect_removes_the_stored_will(self):
        """A normal DISCONNECT discards the will [MQTT-3.1.2-10], in the
        store too: after kill -9 nothing is published."""
        b = self.start()
        c = self.client(b)
        self.assertEqual(c.connect5("w-quit", clean=False, props=expiry_prop(60),
                                    will=("will/quit", b"bye", 0, False, will_delay_prop(0)))[1], 0)
        c.send(disconnect5(0))
        self.assertTrue(c.wait_closed())
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(10)
        b2 = self.start()
        w = self.client(b2)
        self.assertEqual(w.connect5("w-watch2")[1], 0)
        self.assertEqual(w.subscribe5("will/#"), [0])
        w.assert_no_packet(1.5)

    def test_restored_session_expires_after_restart(self):
        """A session that went offline with expiry 2 and was restored from
        the store expires 2 s after the restart, without reconnecting."""
        b = self.start()
        c = self.client(b)
        self.assertEqual(c.connect5("lapse", clean=False, props=expiry_prop(2))[1], 0)
        self.assertEqual(c.subscribe5("l/t", 1), [1])
        c.send(disconnect5(0))
        self.assertTrue(c.wait_closed())
        b.stop()
        b2 = self.start()
        self.assertIsNotNone(b2.wait_log(r"session lapse expired", 0, timeout=6))


if __name__ == "__main__":
    main()
