#!/usr/bin/python3
"""02 subpub: topic matching, '$' topics, SUBACK codes, unsubscribe, the
QoS 1 and 2 flows, and paho interoperability (overlapping subscriptions,
zero-length client id)."""

import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (CONNACK, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL,  # noqa: E402
                      SUBACK, BrokerTestCase, ack_pkt, connect_pkt, main, paho_get,
                      paho_subscribe, paho_unsubscribe, publish_pkt, skip_unless_wisp,
                      subscribe_pkt)


class SubPubTest(BrokerTestCase):

    def test_mosquitto_sub_hash_receives_mosquitto_pub(self):
        """mosquitto_sub -t 'sensors/#' receives mosquitto_pub -t sensors/room1/temp."""
        s = self.sub("sensors/#").wait_subscribed()
        self.pub("sensors/room1/temp", "21.5")
        self.assertEqual(s.get(), ("sensors/room1/temp", False, 0, "21.5"))

    def test_topic_matching(self):
        """[MQTT-4.7.1-2] '#' and [MQTT-4.7.1-3] '+': each filter receives
        exactly the topics it matches; 'a/#' also matches the parent 'a'."""
        cases = [
            ("sensors/+/temp", ["sensors/room1/temp", "sensors/room2/temp"],
             ["sensors/room1/hum", "sensors/room1/temp/x", "sensors/temp"]),
            ("a/#", ["a", "a/b", "a/b/c"], ["ab", "b/a"]),
            ("+", ["top", "x"], ["a/b", "/x"]),
            ("+/+", ["a/b", "/x", "x/"], ["a", "a/b/c"]),
            ("exact/topic", ["exact/topic"], ["exact/topic/", "exact", "Exact/topic"]),
            ("/leading", ["/leading"], ["leading"]),
        ]
        for flt, match, nomatch in cases:
            with self.subTest(filter=flt):
                sub = self.raw()
                self.assertEqual(sub.subscribe(flt), [0])
                pub = self.raw()
                for t in nomatch + match:
                    pub.publish(t, t, qos=1)  # PUBACK: the broker has routed it
                got = [sub.recv_publish().topic for _ in match]
                self.assertEqual(sorted(got), sorted(match))
                sub.assert_no_packet(0.3)
                sub.close()
                pub.close()

    def test_dollar_topics_not_matched_by_leading_wildcards(self):
        """[MQTT-4.7.2-1] '#' and '+/x' do not receive '$SYS/x' or '$foo/x';
        '$foo/#' does."""
        hash_all = self.raw()
        self.assertEqual(hash_all.subscribe("#"), [0])
        plus_x = self.raw()
        self.assertEqual(plus_x.subscribe("+/x"), [0])
        dollar = self.raw()
        self.assertEqual(dollar.subscribe("$foo/#"), [0])
        pub = self.raw()
        pub.publish("$foo/x", "d1", qos=1)
        pub.publish("$SYS/x", "d2", qos=1)
        pub.publish("plain/x", "control", qos=1)
        got = dollar.recv_publish()
        self.assertEqual((got.topic, got.payload), ("$foo/x", b"d1"))
        dollar.assert_no_packet(0.3)
        # Positive control first, so the absence below means something.
        self.assertEqual(hash_all.recv_publish().topic, "plain/x")
        self.assertEqual(plus_x.recv_publish().topic, "plain/x")
        hash_all.assert_no_packet(0.3)
        plus_x.assert_no_packet(0.1)

    def test_unsubscribe_stops_delivery(self):
        """[MQTT-3.10.4-1] after UNSUBACK nothing more is delivered (raw client);
        a second subscription of the same client is not affected."""
        sub = self.raw()
        self.assertEqual(sub.subscribe([("u/a", 1), ("u/b", 1)]), [1, 1])
        pub = self.raw()
        pub.publish("u/a", "before", qos=1)
        self.assertEqual(sub.recv_publish().payload, b"before")
        sub.unsubscribe(["u/a"], pid=7)
        pub.publish("u/a", "after", qos=1)
        pub.publish("u/b", "control", qos=1)
        got = sub.recv_publish()
        self.assertEqual((got.topic, got.payload), ("u/b", b"control"))
        sub.assert_no_packet(0.3)

    def test_unsubscribe_with_paho(self):
        """The same with paho: UNSUBACK, then no delivery."""
        c = self.paho("paho-unsub")
        self.assertEqual(paho_subscribe(c, [("pu/t", 0), ("pu/ctl", 0)]), [0, 0])
        self.pub("pu/t", "one")
        self.assertEqual(paho_get(c).payload, b"one")
        paho_unsubscribe(c, "pu/t")
        self.pub("pu/t", "two")
        self.pub("pu/ctl", "ctl")
        msg = paho_get(c)
        self.assertEqual((msg.topic, msg.payload), ("pu/ctl", b"ctl"))
        self.assertTrue(c.received.empty(), "message delivered after unsubscribe")

    @skip_unless_wisp("disconnects on an invalid filter instead of SUBACK 0x80 "
                      "(the spec allows either for a protocol violation)")
    def test_invalid_filters_get_0x80_valid_ones_granted(self):
        """[MQTT-4.7.1-2]/[MQTT-4.7.1-3] 'a/#/b', 'a+' and '#a' are invalid:
        SUBACK 0x80 for each, while the valid filters of the same SUBSCRIBE are
        granted, in order [MQTT-3.8.4-5][MQTT-3.9.3-1]; the valid ones work."""
        sub = self.raw()
        codes = sub.subscribe([("ok/1", 1), ("a/#/b", 0), ("a+", 0), ("#a", 1),
                               ("ok/+", 0), ("a/b+/c", 2)])
        self.assertEqual(codes, [1, 0x80, 0x80, 0x80, 0, 0x80])
        pub = self.raw()
        pub.publish("ok/2", "via-plus", qos=1)
        got = sub.recv_publish()
        self.assertEqual((got.topic, got.qos), ("ok/2", 0))
        pub.publish("ok/1", "via-both", qos=1)
        # ok/1 and ok/+ overlap: one copy at QoS 1, or two [MQTT-3.3.5-1].
        got = sub.recv_publish()
        self.assertEqual(got.topic, "ok/1")
        if got.qos == 0:
            got = sub.recv_publish()
            self.assertEqual(got.topic, "ok/1")
        self.assertEqual(got.qos, 1)

    def test_suback_grants_requested_qos(self):
        """[MQTT-3.8.4-5] SUBACK carries one code per filter, in order
        [MQTT-3.9.3-1], and here grants exactly the QoS requested."""
        sub = self.raw()
        self.assertEqual(sub.subscribe([("q/0", 0), ("q/1", 1), ("q/2", 2)], pid=0x1234),
                         [0, 1, 2])

    def test_qos1_publish_gets_puback_with_its_packet_id(self):
        """[MQTT-4.3.2-2] QoS 1 PUBLISH is acknowledged by PUBACK with the same
        packet id; the subscriber receives it at QoS 1."""
        sub = self.raw()
        self.assertEqual(sub.subscribe([("q1/t", 1)]), [1])
        pub = self.raw()
        pub.send(publish_pkt("q1/t", "m1", qos=1, pid=0xBEEF))
        ack = pub.expect(PUBACK)
        self.assertEqual((ack.flags, ack.pid, len(ack.body)), (0, 0xBEEF, 2))
        got = sub.recv_publish()
        self.assertEqual((got.topic, got.qos, got.payload), ("q1/t", 1, b"m1"))
        self.assertNotEqual(got.pid, 0, "[MQTT-2.3.1-1] packet id must be non-zero")

    def test_qos2_flow_pubrec_pubrel_pubcomp(self):
        """[MQTT-4.3.3-2] QoS 2: PUBREC, then PUBREL (flags 0010), then PUBCOMP,
        all with the sender's packet id; the subscriber gets it exactly once."""
        sub = self.raw()
        self.assertEqual(sub.subscribe([("q2/t", 2)]), [2])
        pub = self.raw()
        pub.send(publish_pkt("q2/t", "m2", qos=2, pid=77))
        rec = pub.expect(PUBREC)
        self.assertEqual((rec.flags, rec.pid), (0, 77))
        pub.send(ack_pkt(PUBREL, 77))
        comp = pub.expect(PUBCOMP)
        self.assertEqual((comp.flags, comp.pid), (0, 77))
        got = sub.recv_publish()
        self.assertEqual((got.topic, got.qos, got.payload), ("q2/t", 2, b"m2"))
        sub.assert_no_packet(0.3)

    def test_qos2_duplicate_publish_before_pubrel_delivered_once(self):
        """[MQTT-4.3.3-2] a QoS 2 PUBLISH re-sent with DUP before PUBREL is not
        delivered twice (method A: store the packet id until PUBREL)."""
        sub = self.raw()
        self.assertEqual(sub.subscribe([("q2d/t", 2)]), [2])
        pub = self.raw()
        pub.send(publish_pkt("q2d/t", "once", qos=2, pid=5))
        self.assertEqual(pub.expect(PUBREC).pid, 5)
        pub.send(publish_pkt("q2d/t", "once", qos=2, pid=5, dup=True))
        self.assertEqual(pub.expect(PUBREC).pid, 5)
        pub.send(ack_pkt(PUBREL, 5))
        self.assertEqual(pub.expect(PUBCOMP).pid, 5)
        self.assertEqual(sub.recv_publish().payload, b"once")
        sub.assert_no_packet(0.5)

    def test_delivery_qos_is_min_of_publish_and_subscription(self):
        """[MQTT-3.8.4-6] delivery QoS is the minimum of both: a QoS 2 publish
        reaches QoS 0/1/2 subscribers at 0/1/2; a QoS 0 publish reaches a QoS 2
        subscriber at 0."""
        s0 = self.raw()
        self.assertEqual(s0.subscribe([("d/t", 0)]), [0])
        s1 = self.raw()
        self.assertEqual(s1.subscribe([("d/t", 1)]), [1])
        s2 = self.raw()
        self.assertEqual(s2.subscribe([("d/t", 2)]), [2])
        pub = self.raw()
        pub.publish("d/t", "q2", qos=2, pid=9)
        self.assertEqual(s0.recv_publish().qos, 0)
        self.assertEqual(s1.recv_publish().qos, 1)
        self.assertEqual(s2.recv_publish().qos, 2)
        pub.publish("d/t", "q0", qos=0)
        got = s2.recv_publish()
        self.assertEqual((got.payload, got.qos), (b"q0", 0))

    def test_paho_publish_qos_0_1_2(self):
        """paho publishes at QoS 0, 1 and 2 (wait_for_publish completes, so the
        broker finished each flow) and a mosquitto_sub -q 2 receives all three."""
        s = self.sub("pp/#", qos=2).wait_subscribed()
        c = self.paho("paho-pub")
        for qos in (0, 1, 2):
            info = c.publish("pp/q%d" % qos, "p%d" % qos, qos=qos)
            info.wait_for_publish(timeout=5)
            self.assertTrue(info.is_published(), "QoS %d publish not completed" % qos)
        got = sorted(s.get() for _ in range(3))
        self.assertEqual(got, [("pp/q0", False, 0, "p0"), ("pp/q1", False, 1, "p1"),
                               ("pp/q2", False, 2, "p2")])

    def test_paho_overlapping_subscriptions(self):
        """[MQTT-3.3.5-1] overlapping filters: the message goes out respecting
        the maximum QoS of the matching subscriptions (once or twice, as the
        3.1.1 spec allows); a topic matching only one filter arrives once."""
        c = self.paho("paho-overlap")
        self.assertEqual(paho_subscribe(c, [("ov/#", 0), ("ov/x", 2)]), [0, 2])
        p = self.paho("paho-overlap-pub")
        p.publish("ov/x", "both", qos=2).wait_for_publish(timeout=5)
        p.publish("ov/y", "one", qos=2).wait_for_publish(timeout=5)
        p.publish("ov/end", "end", qos=0).wait_for_publish(timeout=5)
        # A fence on the same topic, QoS and publisher comes after every copy
        # of "both" on the subscriber's connection [MQTT-4.6.0-6], and paho
        # completes QoS 2 flows in order: once a fence is in, every copy of
        # "both" is too, so a third copy cannot hide behind a quiet period.
        p.publish("ov/x", "fence", qos=2).wait_for_publish(timeout=5)
        msgs = []
        while not {"ov/end", "fence"} <= {t if t != "ov/x" or pl != b"fence" else "fence" for t, _, pl in msgs}:
            m = paho_get(c)
            msgs.append((m.topic, m.qos, m.payload))
        fence_at = next(i for i, m in enumerate(msgs) if m[0] == "ov/x" and m[2] == b"fence")
        late = [m for m in msgs[fence_at:] if m[2] == b"both"]
        self.assertEqual(late, [], msgs)
        both = [m for m in msgs if m[0] == "ov/x" and m[2] == b"both"]
        self.assertIn(len(both), (1, 2), msgs)
        self.assertEqual(max(q for _, q, _ in both), 2, msgs)
        self.assertEqual([m for m in msgs if m[0] == "ov/y"], [("ov/y", 0, b"one")])

    def test_paho_zero_length_client_id(self):
        """[MQTT-3.1.3-6] paho with client_id "" (clean session) connects and
        can subscribe and receive."""
        c = self.paho("")
        self.assertEqual(paho_subscribe(c, [("zl/t", 1)]), [1])
        self.pub("zl/t", "zero", qos=1)
        m = paho_get(c)
        self.assertEqual((m.topic, m.payload, m.qos), ("zl/t", b"zero", 1))

    def test_resubscribe_replaces_the_subscription(self):
        """[MQTT-3.8.4-3] subscribing to the same filter again replaces the
        subscription (new QoS) and does not duplicate delivery."""
        sub = self.raw()
        self.assertEqual(sub.subscribe([("rs/t", 0)]), [0])
        self.assertEqual(sub.subscribe([("rs/t", 2)], pid=2), [2])
        pub = self.raw()
        pub.publish("rs/t", "x", qos=2)
        got = sub.recv_publish()
        self.assertEqual((got.payload, got.qos), (b"x", 2))
        sub.assert_no_packet(0.5)

    def test_unsubscribe_unknown_filter_gets_unsuback(self):
        """[MQTT-3.10.4-5] UNSUBACK even when nothing matched."""
        sub = self.raw()
        sub.unsubscribe(["never/subscribed", "nor/+/this"], pid=0x0101)
        sub.ping()

    def test_pipelined_packets_in_one_write(self):
        """CONNECT, SUBSCRIBE and 50 QoS 1 PUBLISHes in a single write are all
        handled, in order: CONNACK, SUBACK, 50 PUBACKs and the 50 messages."""
        c = self.raw(connect=False)
        data = connect_pkt("pipeline") + subscribe_pkt(1, [("pipe/t", 1)])
        data += b"".join(publish_pkt("pipe/t", "m%d" % i, qos=1, pid=100 + i) for i in range(50))
        c.send(data)
        self.assertEqual(c.expect(CONNACK).body, b"\x00\x00")
        self.assertEqual(c.expect(SUBACK).body, b"\x00\x01\x01")
        acks, msgs = [], []
        for _ in range(100):
            pkt = c.recv_packet()
            if pkt.type == PUBACK:
                acks.append(pkt.pid)
            elif pkt.type == PUBLISH:
                msgs.append(pkt.payload)
                c.send(ack_pkt(PUBACK, pkt.pid))
            else:
                self.fail("unexpected %r" % pkt)
        self.assertEqual(acks, [100 + i for i in range(50)])
        self.assertEqual(msgs, [b"m%d" % i for i in range(50)],
                         "[MQTT-4.6.0-6] ordered delivery on one topic")

    def test_large_payload_fan_out_is_intact(self):
        """A 300 KiB payload reaches three subscribers (QoS 0, 1, 2) byte for
        byte, and a 0-byte payload arrives as 0 bytes."""
        payload = random.Random(7).randbytes(300 * 1024)
        subs = []
        for q in (0, 1, 2):
            s = self.raw()
            self.assertEqual(s.subscribe([("big/t", q)]), [q])
            subs.append(s)
        pub = self.raw()
        pub.publish("big/t", payload, qos=2)
        pub.publish("big/t", b"", qos=1, pid=2)
        for q, s in enumerate(subs):
            got = s.recv_publish(timeout=10)
            self.assertEqual((got.qos, len(got.payload)), (q, len(payload)))
            self.assertTrue(got.payload == payload, "payload corrupted for QoS %d" % q)
            self.assertEqual(s.recv_publish().payload, b"")

    def test_publish_without_subscribers_is_acked(self):
        """A QoS 1/2 publish nobody subscribes to still completes its flow."""
        pub = self.raw()
        pub.publish("nobody/here", "x", qos=1, pid=1)
        pub.publish("nobody/here", "x", qos=2, pid=2)
        pub.ping()


if __name__ == "__main__":
    main()
