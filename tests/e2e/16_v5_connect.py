#!/usr/bin/python3
"""16 v5 CONNECT/CONNACK and server DISCONNECT: every refusal and every
close the broker causes is answered with its MQTT 5 reason code (the one
reason table, broker/src/session/reason.h), where 3.1.1 gets its return
code or a plain close. Raw packets, so the bytes are checked exactly."""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (CONNACK, DISCONNECT, BrokerTestCase, RawClient,  # noqa: E402
                      keepalive_close_bound, main, mqtt_str, packet)


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


def disconnect5(reason):
    return packet(0xE0, bytes([reason, 0]))


class V5Client(RawClient):
    def connect5(self, client_id, **kw):
        """Sends a v5 CONNECT; returns (session present, reason code, properties)."""
        self.send(connect5(client_id, **kw))
        ack = self.expect(CONNACK)
        return bool(ack.body[0] & 1), ack.body[1], ack.body[3:3 + ack.body[2]]

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
        reason code (0x85 Client Identifier not valid for an empty id without
        Clean Start, not 3.1.1's 2), session present 0, and the connection
        closes; the 3.1.1 client still gets return code 2."""
        c = self.v5()
        present, code, _ = c.connect5("", clean=False)
        self.assertEqual((present, code), (False, 0x85))
        self.assertTrue(c.wait_closed())
        old = self.raw(connect=False)
        self.assertEqual(old.connect("", clean=False), 2)

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


if __name__ == "__main__":
    main()
