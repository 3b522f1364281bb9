#!/usr/bin/python3
"""06 session: persistent sessions (clean session 0) and what they keep:
subscriptions, messages published while the client was offline, in-flight
QoS 1/2 messages re-sent after reconnect; the session-present flag; clean
session 1 discarding the stored session; the bounded offline queue."""

import os
import re
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (DISCONNECT_PKT, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL,  # noqa: E402
                      BrokerTestCase, ack_pkt, main, paho_get, paho_subscribe)


class SessionCase(BrokerTestCase):

    def wait_disconnected(self, client_id, offset):
        """The broker has handled client_id's disconnection (its log says so
        after byte offset), so later publishes find the session offline."""
        line = self.broker.wait_log(r"client %s\b.*(disconnect|closed)" % re.escape(client_id),
                                    offset, timeout=5)
        self.assertIsNotNone(line, "no disconnection of %s in the broker log" % client_id)

    def go_offline(self, client, client_id):
        """DISCONNECT, close, and wait until the broker has processed it."""
        offset = self.broker.log_size()
        client.send(DISCONNECT_PKT)
        self.assertTrue(client.wait_closed(), "[MQTT-3.14.4-1] no close after DISCONNECT")
        client.close()
        self.wait_disconnected(client_id, offset)

    def persistent(self, client_id, filters=None):
        """A raw clean-session-0 client, optionally subscribed to filters."""
        c = self.raw(client_id, clean=False)
        if filters:
            self.assertEqual(c.subscribe(filters), [q for _, q in filters])
        return c


class PersistentSessionTest(SessionCase):

    def test_mosquitto_sub_persistent_session_gets_offline_messages(self):
        """mosquitto_sub -c -i ID -q 1 subscribes and quits; 3 QoS 1 and 3
        QoS 2 messages are published while it is offline; started again it
        receives all 6 exactly once, in order [MQTT-4.6.0-6], at QoS 1
        (min of publish and subscription [MQTT-3.8.4-6]); a third start gets
        nothing more (every message was acknowledged once)."""
        cid = "mosq-persist"
        args = ["-c", "-i", cid]
        first = self.sub("ps/t", qos=1, extra=args).wait_subscribed()
        offset = self.broker.log_size()
        first.kill(signal.SIGTERM)  # mosquitto_sub sends DISCONNECT on SIGTERM
        self.wait_disconnected(cid, offset)
        pub = self.raw()
        for i in range(6):
            pub.publish("ps/t", "m%d" % i, qos=1 if i % 2 == 0 else 2, pid=1 + i)
        second = self.sub("ps/t", qos=1, extra=args)
        got = [second.get() for _ in range(6)]
        self.assertEqual(got, [("ps/t", False, 1, "m%d" % i) for i in range(6)])
        second.wait_subscribed()  # it subscribes again after CONNACK: no copy from that
        second.assert_nothing(0.5)
        offset = self.broker.log_size()
        second.kill(signal.SIGTERM)
        self.wait_disconnected(cid, offset)
        third = self.sub("ps/t", qos=1, extra=args).wait_subscribed()
        third.assert_nothing(0.5)

    def test_session_present_flag(self):
        """CONNACK session present: 0 on a first clean-session-0 connect
        [MQTT-3.2.2-3], 1 when a stored session is resumed [MQTT-3.2.2-2],
        0 whenever clean session is 1 [MQTT-3.2.2-1]."""
        c = self.persistent("sp-1", [("sp/t", 1)])
        self.assertIs(c.session_present, False, "[MQTT-3.2.2-3]")
        self.go_offline(c, "sp-1")
        c = self.raw("sp-1", clean=False)
        self.assertIs(c.session_present, True, "[MQTT-3.2.2-2]")
        self.go_offline(c, "sp-1")
        c = self.raw("sp-1", clean=True)
        self.assertIs(c.session_present, False, "[MQTT-3.2.2-1]")
        other = self.raw("sp-2", clean=True)
        self.assertIs(other.session_present, False, "[MQTT-3.2.2-1]")

    def test_paho_session_present_and_offline_qos2(self):
        """paho with clean_session=False: session present is 0, then 1 on
        reconnect, and a QoS 2 message published meanwhile arrives once at
        QoS 2."""
        c = self.paho("paho-persist", clean_session=False)
        self.assertEqual(c.session_present, 0)
        self.assertEqual(paho_subscribe(c, [("pps/t", 2)]), [2])
        offset = self.broker.log_size()
        c.disconnect()
        c.loop_stop()
        self.wait_disconnected("paho-persist", offset)
        self.pub("pps/t", "offline", qos=2)
        c = self.paho("paho-persist", clean_session=False)
        self.assertEqual(c.session_present, 1)
        m = paho_get(c)
        self.assertEqual((m.topic, m.payload, m.qos), ("pps/t", b"offline", 2))
        self.pub("pps/t", "live", qos=1)  # the subscription survived too
        m = paho_get(c)
        self.assertEqual((m.payload, m.qos), (b"live", 1))
        self.assertTrue(c.received.empty(), "duplicate delivery")

    def test_clean_session_discards_stored_session(self):
        """[MQTT-3.1.2-6] connecting with clean session 1 discards the stored
        session: its queued message is not delivered, and a later clean
        session 0 connect finds no session and no subscription."""
        c = self.persistent("cs-1", [("cs/t", 1)])
        self.go_offline(c, "cs-1")
        pub = self.raw()
        pub.publish("cs/t", "queued", qos=1)
        c = self.raw("cs-1", clean=True)
        self.assertIs(c.session_present, False)
        c.assert_no_packet(0.5)
        self.go_offline(c, "cs-1")
        pub.publish("cs/t", "after", qos=1, pid=2)
        c = self.raw("cs-1", clean=False)
        self.assertIs(c.session_present, False, "the stored session should be gone")
        c.assert_no_packet(0.5)

    def test_subscriptions_survive_reconnect(self):
        """[MQTT-3.1.2-4] a resumed session keeps its subscriptions: the client
        receives live messages without subscribing again."""
        c = self.persistent("sub-keep", [("sk/+", 2)])
        self.go_offline(c, "sub-keep")
        c = self.raw("sub-keep", clean=False)
        self.assertIs(c.session_present, True)
        self.raw().publish("sk/a", "live", qos=2)
        got = c.recv_publish()
        self.assertEqual((got.topic, got.payload, got.qos), ("sk/a", b"live", 2))

    def test_qos0_not_kept_for_offline_client(self):
        """QoS 0 messages are not queued for an offline session (wisp's and
        mosquitto's default); QoS 1 ones are."""
        c = self.persistent("q0-off", [("q0o/t", 1)])
        self.go_offline(c, "q0-off")
        pub = self.raw()
        pub.publish("q0o/t", "zero", qos=0)
        pub.publish("q0o/t", "one", qos=1)
        c = self.raw("q0-off", clean=False)
        got = c.recv_publish()
        self.assertEqual((got.payload, got.qos), (b"one", 1))
        c.assert_no_packet(0.5)


class RedeliveryTest(SessionCase):

    def test_inflight_resent_with_dup_and_pubrel_after_reconnect(self):
        """[MQTT-4.4.0-1] on resuming a session the broker re-sends, with their
        original packet ids, the unacknowledged PUBLISH packets with DUP=1
        [MQTT-3.3.1-1] (a QoS 1 without PUBACK, a QoS 2 without PUBREC) and
        the PUBREL of the QoS 2 message that got its PUBREC; PUBLISH packets
        in their original order [MQTT-4.6.0-1]. Completing the flows then
        leaves nothing to re-send."""
        sub = self.persistent("redeliver", [("rd/#", 2)])
        pub = self.raw()
        pub.publish("rd/a", "m1", qos=1, pid=1)
        pub.publish("rd/b", "m2", qos=2, pid=2)
        pub.publish("rd/c", "m3", qos=2, pid=3)
        p1, p2, p3 = (sub.expect(PUBLISH) for _ in range(3))
        self.assertEqual([(p.payload, p.qos, p.dup) for p in (p1, p2, p3)],
                         [(b"m1", 1, False), (b"m2", 2, False), (b"m3", 2, False)])
        sub.send(ack_pkt(PUBREC, p2.pid))
        self.assertEqual(sub.expect(PUBREL).pid, p2.pid)
        # Gone without PUBACK for m1, PUBCOMP for m2, PUBREC for m3.
        self.go_offline(sub, "redeliver")

        sub = self.raw("redeliver", clean=False)
        self.assertIs(sub.session_present, True)
        pkts = [sub.recv_packet() for _ in range(3)]
        publishes = [p for p in pkts if p.type == PUBLISH]
        pubrels = [p for p in pkts if p.type == PUBREL]
        self.assertEqual([(p.topic, p.payload, p.qos, p.dup, p.pid) for p in publishes],
                         [("rd/a", b"m1", 1, True, p1.pid), ("rd/c", b"m3", 2, True, p3.pid)],
                         "re-sent PUBLISH packets: %r" % pkts)
        self.assertEqual([p.pid for p in pubrels], [p2.pid], "re-sent PUBREL: %r" % pkts)
        self.assertEqual(pubrels[0].flags, 0x2, "[MQTT-3.6.1-1]")
        sub.send(ack_pkt(PUBACK, p1.pid))
        sub.send(ack_pkt(PUBCOMP, p2.pid))
        sub.send(ack_pkt(PUBREC, p3.pid))
        self.assertEqual(sub.expect(PUBREL).pid, p3.pid)
        sub.send(ack_pkt(PUBCOMP, p3.pid))
        sub.assert_no_packet(0.5)
        self.go_offline(sub, "redeliver")

        sub = self.raw("redeliver", clean=False)
        self.assertIs(sub.session_present, True)
        sub.assert_no_packet(0.5)

    def test_unacked_message_resent_on_session_takeover(self):
        """A second connection with the same client id takes the session over
        [MQTT-3.1.4-2]; the QoS 1 message the first one did not acknowledge is
        re-sent to the new connection with DUP=1."""
        old = self.persistent("takeover", [("to/t", 1)])
        self.raw().publish("to/t", "pending", qos=1)
        first = old.expect(PUBLISH)
        self.assertFalse(first.dup)
        new = self.raw("takeover", clean=False)
        self.assertIs(new.session_present, True)
        self.assertTrue(old.wait_closed(), "[MQTT-3.1.4-2] old connection not closed")
        again = new.expect(PUBLISH)
        self.assertEqual((again.payload, again.dup, again.pid), (b"pending", True, first.pid))
        new.send(ack_pkt(PUBACK, again.pid))
        new.assert_no_packet(0.3)


class OfflineQueueLimitTest(SessionCase):
    """limits.max_queued_messages bounds what a session keeps while offline:
    when full, new messages for it are dropped, the queued ones kept."""

    LIMITS = {"max_queued_messages": 5}

    def test_offline_queue_keeps_first_n(self):
        """12 QoS 1 messages published while the client is offline: after
        reconnecting it receives exactly the first 5, in order."""
        c = self.persistent("bounded", [("bq/t", 1)])
        self.go_offline(c, "bounded")
        pub = self.raw()
        for i in range(12):
            pub.publish("bq/t", "m%d" % i, qos=1, pid=1 + i)
        c = self.raw("bounded", clean=False)
        self.assertIs(c.session_present, True)
        got = [c.recv_publish().payload for _ in range(5)]
        self.assertEqual(got, [b"m%d" % i for i in range(5)])
        c.assert_no_packet(0.5)
        # The queue is usable again once drained.
        pub.publish("bq/t", "live", qos=1, pid=100)
        self.assertEqual(c.recv_publish().payload, b"live")

    def test_mosquitto_sub_offline_queue_bounded(self):
        """The same with mosquitto_sub -c -i ID -q 1 and QoS 2 publishes:
        the first 5 arrive at QoS 1, nothing else."""
        cid = "mosq-bounded"
        args = ["-c", "-i", cid]
        s = self.sub("bqm/t", qos=1, extra=args).wait_subscribed()
        offset = self.broker.log_size()
        s.kill(signal.SIGTERM)
        self.wait_disconnected(cid, offset)
        pub = self.raw()
        for i in range(9):
            pub.publish("bqm/t", "m%d" % i, qos=2, pid=1 + i)
        s = self.sub("bqm/t", qos=1, extra=args)
        self.assertEqual([s.get() for _ in range(5)],
                         [("bqm/t", False, 1, "m%d" % i) for i in range(5)])
        s.wait_subscribed()
        s.assert_nothing(0.5)


if __name__ == "__main__":
    main()
