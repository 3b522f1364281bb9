#!/usr/bin/python3
"""01 connect: CONNECT/CONNACK, the first-packet rules, keepalive, takeover,
MQTT 3.1 and PINGREQ, seen from real sockets and the mosquitto clients."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (CONNACK, PINGRESP, PINGREQ_PKT, BrokerTestCase, Closed,  # noqa: E402
                      connect_pkt, keepalive_close_bound, main, skip_unless_wisp,
                      subscribe_pkt)


class ConnectTest(BrokerTestCase):

    def test_unsupported_protocol_level_gets_connack_1_and_close(self):
        """[MQTT-3.1.2-2] level 9 with name "MQTT": CONNACK 0x01 (in the 3.1.1
        form, two bytes), then the broker closes the connection. The same for
        name and level that do not belong together (MQTT/3, MQIsdp/4)."""
        for name, level in (("MQTT", 9), ("MQTT", 3), ("MQIsdp", 4)):
            with self.subTest(name=name, level=level):
                c = self.raw(connect=False)
                rc = c.connect("lvl%d" % level, proto_name=name, level=level)
                self.assertEqual(rc, 0x01)
                self.assertTrue(c.wait_closed(), "connection left open after CONNACK 0x01")

    def test_23_character_client_id_is_accepted(self):
        """[MQTT-3.1.3-5] ids of 1 to 23 characters from [0-9a-zA-Z] are
        always accepted."""
        c = self.raw(connect=False)
        self.assertEqual(c.connect("abcdefghijkLMNOPQRSTU09"), 0)
        c.ping()

    def test_empty_client_id_with_clean_session_is_accepted(self):
        """[MQTT-3.1.3-6] a zero-byte ClientId with CleanSession=1 is accepted."""
        c = self.raw(connect=False)
        c.send(connect_pkt("", clean=True))
        ack = c.expect(CONNACK)
        self.assertEqual(ack.body, b"\x00\x00",
                         "session present 0 [MQTT-3.2.2-1] and return code 0")
        c.ping()

    def test_empty_client_id_without_clean_session_gets_connack_2(self):
        """[MQTT-3.1.3-8] zero-byte ClientId with CleanSession=0: CONNACK 0x02
        (identifier rejected), then close."""
        c = self.raw(connect=False)
        self.assertEqual(c.connect("", clean=False), 0x02)
        self.assertTrue(c.wait_closed(), "connection left open after CONNACK 0x02")

    def test_second_connect_closes_the_connection(self):
        """[MQTT-3.1.0-2] a second CONNECT is a protocol violation."""
        c = self.raw("twice")
        c.send(connect_pkt("twice"))
        self.assertTrue(c.wait_closed(), "second CONNECT did not close the connection")

    def test_first_packet_other_than_connect_closes(self):
        """[MQTT-3.1.0-1] the first packet must be CONNECT: PINGREQ or
        SUBSCRIBE first gets no answer, only a close."""
        for name, data in (("PINGREQ", PINGREQ_PKT),
                           ("SUBSCRIBE", subscribe_pkt(1, [("a/b", 0)]))):
            with self.subTest(first=name):
                c = self.raw(connect=False)
                c.send(data)
                try:
                    pkt = c.recv_packet()
                    self.fail("broker answered %s-before-CONNECT with %r" % (name, pkt))
                except Closed:
                    pass

    def test_pingreq_gets_pingresp(self):
        """[MQTT-3.12.4-1] the server answers PINGREQ with PINGRESP."""
        c = self.raw("pinger")
        for _ in range(3):
            c.send(PINGREQ_PKT)
            resp = c.expect(PINGRESP)
            self.assertEqual((resp.flags, resp.body), (0, b""))

    def test_takeover_disconnects_the_first_client(self):
        """[MQTT-3.1.4-2] a second client with the same id disconnects the first."""
        first = self.raw("same-id")
        second = self.raw("same-id")
        self.assertTrue(first.wait_closed(), "first client still connected after takeover")
        second.ping()

    def test_mqtt31_clients_work(self):
        """MQTT 3.1 (protocol name MQIsdp, level 3): mosquitto_sub -V 31
        receives from mosquitto_pub -V 31."""
        c = self.raw(connect=False)
        self.assertEqual(c.connect("v31-raw", proto_name="MQIsdp", level=3), 0)
        c.ping()
        s = self.sub("v31/#", extra=["-V", "31"]).wait_subscribed()
        self.pub("v31/t", "hello31", extra=["-V", "31"])
        self.assertEqual(s.get(), ("v31/t", False, 0, "hello31"))


class KeepaliveTest(BrokerTestCase):

    def _time_until_closed(self, keepalive, bound):
        c = self.raw(connect=False)
        start = time.monotonic()  # before CONNECT: the broker's clock starts later
        self.assertEqual(c.connect("ka-%d" % keepalive, keepalive=keepalive), 0)
        closed = c.wait_closed(bound)
        return closed, time.monotonic() - start

    def test_keepalive_expiry_closes_after_one_and_a_half_periods(self):
        """[MQTT-3.1.2-24] keepalive 1 s and silence: closed after 1.5 s
        (not before 1 s; generous upper bound 4 s, see keepalive_close_bound)."""
        bound = keepalive_close_bound(1)
        closed, elapsed = self._time_until_closed(1, bound)
        self.assertTrue(closed, "not closed within %.1f s with keepalive 1" % bound)
        self.assertGreaterEqual(elapsed, 1.0, "closed before one keepalive period")

    def test_traffic_keeps_the_connection_alive(self):
        """Packets within the keepalive period (PINGREQ every 0.4 s, keepalive
        1 s) keep the connection open for well over 1.5 periods."""
        c = self.raw("ka-busy", keepalive=1)
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            c.ping()
            time.sleep(0.4)
        c.ping()

    def test_keepalive_zero_is_never_expired(self):
        """(3.1.1 section 3.1.2.10) keepalive 0 turns the mechanism off: still open
        after 3 s of silence."""
        c = self.raw("ka-zero", keepalive=0)
        time.sleep(3.0)
        self.assertTrue(c.is_open(), "keepalive 0 connection was closed")


class ConnectTimeoutTest(BrokerTestCase):
    LIMITS = {"connect_timeout": 1}

    @skip_unless_wisp("the wait for CONNECT is not configurable (fixed, much longer)")
    def test_no_connect_within_timeout_closes(self):
        """A socket that sends nothing is closed after the configured
        connect_timeout (1 s; accepted bounds 1-5 s)."""
        start = time.monotonic()
        c = self.raw(connect=False)
        self.assertTrue(c.wait_closed(5.0), "idle socket not closed within 5 s")
        # The clock started before the TCP connect, so a timer that starts
        # at accept and is exact cannot fire before 1.0 s here.
        self.assertGreaterEqual(time.monotonic() - start, 1.0,
                                "closed before the configured connect_timeout of 1 s")

    @skip_unless_wisp("the wait for CONNECT is not configurable (fixed, much longer)")
    def test_partial_connect_within_timeout_closes(self):
        """Half a CONNECT does not reset the connect timer: still closed."""
        c = self.raw(connect=False)
        c.send(connect_pkt("partial")[:6])
        self.assertTrue(c.wait_closed(5.0), "half-sent CONNECT kept the socket open")

    def test_connect_in_time_is_not_closed(self):
        """A client that connects in time is not subject to the connect timeout."""
        c = self.raw("in-time", keepalive=0)
        time.sleep(2.0)
        self.assertTrue(c.is_open(), "connected client closed by the connect timeout")


if __name__ == "__main__":
    main()
