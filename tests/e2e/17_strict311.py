#!/usr/bin/python3
"""17 strictness: what 3.1.1 and 3.1 (and, where the rule is shared, 5.0)
clients must not get away with. Each offender's connection is closed with
no answer that is not due, logged once, and the broker keeps serving."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (CONNACK, PUBACK, PUBREC, BrokerTestCase, Closed, RawClient,  # noqa: E402
                      ack_pkt, connect_pkt, main, publish_pkt, subscribe_pkt,
                      unsubscribe_pkt)


class StrictTest(BrokerTestCase):

    def assert_closed_silently(self, c, what):
        """The broker closes without sending anything."""
        try:
            pkt = c.recv_packet(3.0)
        except Closed:
            return
        self.fail("%s: got %r instead of a close" % (what, pkt))

    def fresh(self):
        c = RawClient(self.broker.port)
        self.on_cleanup(c.close)
        return c

    def test_unknown_protocol_name_closed_without_connack(self):
        """[MQTT-3.1.2-1] a protocol name that is neither MQTT nor MQIsdp: the
        connection is closed, no CONNACK (none is due)."""
        c = self.fresh()
        c.send(connect_pkt("pn", proto_name="MQTX"))
        self.assert_closed_silently(c, "protocol name MQTX")

    def test_control_characters_close(self):
        """MQTT-1.5.4 lets a server refuse control characters; Wisp, as
        Mosquitto, closes for U+0001..U+001F and U+007F..U+009F in a client
        id, user name or will topic (no CONNACK), or in a PUBLISH topic."""
        cases = [("client id", dict(client_id="a\x01b")),
                 ("user name", dict(client_id="u", username="x\x7f")),
                 ("will topic", dict(client_id="w", will=("w/\u0085", b"x", 0, False)))]
        for what, kw in cases:
            with self.subTest(what=what):
                c = self.fresh()
                c.send(connect_pkt(**kw))
                self.assert_closed_silently(c, what)
        c = self.raw("ctl-pub")
        c.send(publish_pkt("t/\x1f", b"x"))
        self.assert_closed_silently(c, "PUBLISH topic")
        self.assertTrue(self.raw("still-here").is_open())

    def test_zero_length_filter_closes(self):
        """[MQTT-4.7.3-1] a zero-length filter in SUBSCRIBE or UNSUBSCRIBE
        closes the connection, with no SUBACK or UNSUBACK."""
        c = self.raw("empty-sub")
        c.send(subscribe_pkt(1, [("ok/t", 0), ("", 0)]))
        self.assert_closed_silently(c, "SUBSCRIBE")
        c = self.raw("empty-unsub")
        c.send(unsubscribe_pkt(1, [""]))
        self.assert_closed_silently(c, "UNSUBSCRIBE")

    def test_wrong_acknowledgement_closes(self):
        """Sections 4.3.2 and 4.3.3: PUBREC answering a QoS 1 PUBLISH, or
        PUBACK answering a QoS 2 one, closes the subscriber's connection."""
        for qos, wrong in ((1, PUBREC), (2, PUBACK)):
            with self.subTest(qos=qos):
                sub = self.raw("wrong-%d" % qos)
                self.assertEqual(sub.subscribe([("w/%d" % qos, qos)]), [qos])
                self.raw("pub-%d" % qos).publish("w/%d" % qos, b"x", qos=qos)
                got = sub.expect(3)
                sub.send(ack_pkt(wrong, got.pid))
                self.assertTrue(sub.wait_closed(), "still open after the wrong ack")

    def test_mqtt31_client_id_limit(self):
        """MQTT 3.1 (section 3.1, client identifier): at most 23 characters;
        24 gets CONNACK 2. 3.1.1 lifted the limit [MQTT-3.1.3-5]."""
        ok = self.fresh()
        self.assertEqual(ok.connect("x" * 23, proto_name="MQIsdp", level=3), 0)
        long_id = self.fresh()
        self.assertEqual(long_id.connect("y" * 24, proto_name="MQIsdp", level=3), 2)
        self.assertEqual(self.fresh().connect("z" * 24), 0)

    def test_mqtt31_connack_never_sets_session_present(self):
        """3.1's CONNACK has no session present flag (the byte is reserved):
        a resumed 3.1 session still gets 0 there."""
        first = self.fresh()
        self.assertEqual(first.connect("keep31", clean=False, proto_name="MQIsdp", level=3), 0)
        self.assertEqual(first.subscribe([("k/t", 1)]), [1])
        first.close()
        again = self.fresh()
        again.send(connect_pkt("keep31", clean=False, proto_name="MQIsdp", level=3))
        ack = again.expect(CONNACK)
        self.assertEqual(ack.body, b"\x00\x00")


if __name__ == "__main__":
    main()
