#!/usr/bin/python3
"""05 will: when the Will Message is published, and how."""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (DISCONNECT_PKT, BrokerTestCase, keepalive_close_bound,  # noqa: E402
                      main, publish_pkt)

WILL_ARGS = ["--will-topic", "will/cli", "--will-payload", "gone"]


class WillTest(BrokerTestCase):

    def watcher(self, qos=0):
        w = self.raw("watcher")
        self.assertEqual(w.subscribe([("will/#", qos)]), [qos])
        return w

    def test_will_on_killed_mosquitto_sub(self):
        """[MQTT-3.1.2-8] SIGKILL of a mosquitto_sub started with a will: the
        will is published to the will topic."""
        w = self.watcher()
        s = self.sub("idle/t", extra=WILL_ARGS).wait_subscribed()
        s.kill(signal.SIGKILL)
        got = w.recv_publish()
        self.assertEqual((got.topic, got.payload, got.retain), ("will/cli", b"gone", False))

    def test_will_on_killed_mosquitto_pub(self):
        """[MQTT-3.1.2-8] the same for a connected mosquitto_pub -l."""
        w = self.watcher()
        p = self.pub_lines("idle/p", extra=WILL_ARGS).wait_connected()
        p.kill(signal.SIGKILL)
        got = w.recv_publish()
        self.assertEqual((got.topic, got.payload), ("will/cli", b"gone"))

    def test_will_on_socket_closed_without_disconnect(self):
        """[MQTT-3.1.2-8] a raw client closing its socket without DISCONNECT."""
        w = self.watcher()
        c = self.raw("raw-will", will=("will/raw", b"bye", 0, False))
        c.ping()
        c.close()
        got = w.recv_publish()
        self.assertEqual((got.topic, got.payload), ("will/raw", b"bye"))

    def test_no_will_after_disconnect(self):
        """[MQTT-3.1.2-10] DISCONNECT deletes the will. A control client that
        closes without DISCONNECT afterwards proves wills still flow."""
        w = self.watcher()
        polite = self.raw("polite", will=("will/polite", b"should-not", 0, False))
        polite.send(DISCONNECT_PKT)
        self.assertTrue(polite.wait_closed(), "[MQTT-3.14.4-1] broker must close after DISCONNECT")
        polite.close()
        rude = self.raw("rude", will=("will/rude", b"control", 0, False))
        rude.close()
        got = w.recv_publish()
        self.assertEqual((got.topic, got.payload), ("will/rude", b"control"))
        w.assert_no_packet(0.5)

    def test_will_on_keepalive_timeout(self):
        """[MQTT-3.1.2-8] the broker closing a silent keepalive-1 client
        publishes its will."""
        w = self.watcher()
        self.raw("sleepy", keepalive=1, will=("will/ka", b"timeout", 0, False))
        got = w.recv_publish(timeout=keepalive_close_bound(1) + 1.0)
        self.assertEqual((got.topic, got.payload), ("will/ka", b"timeout"))

    def test_will_on_protocol_error(self):
        """[MQTT-3.1.2-8] a connection closed for a protocol error (QoS 3
        PUBLISH, [MQTT-3.3.1-4]) publishes the will."""
        w = self.watcher()
        c = self.raw("bad", will=("will/bad", b"malformed", 0, False))
        c.send(bytes([0x36]) + publish_pkt("x", "y", qos=1)[1:])
        self.assertTrue(c.wait_closed(), "QoS 3 PUBLISH did not close the connection")
        got = w.recv_publish()
        self.assertEqual((got.topic, got.payload), ("will/bad", b"malformed"))

    def test_will_retain_is_honoured(self):
        """[MQTT-3.1.2-17] a will with retain 1 is stored as retained: a later
        subscriber gets it with the retain flag set."""
        w = self.watcher()
        c = self.raw("ret-will", will=("will/retained", b"last", 1, True))
        c.close()
        got = w.recv_publish()
        self.assertEqual((got.topic, got.payload, got.retain), ("will/retained", b"last", False))
        late = self.raw("late")
        late.subscribe([("will/retained", 1)])
        got = late.recv_publish()
        self.assertEqual((got.topic, got.payload, got.retain, got.qos),
                         ("will/retained", b"last", True, 1))

    def test_will_qos1_reaches_qos1_subscriber_at_qos1(self):
        """[MQTT-3.1.2-14] a QoS 1 will is delivered to a QoS 1 subscriber at
        QoS 1 (with a packet id) and to a QoS 0 subscriber at QoS 0."""
        w1 = self.watcher(qos=1)
        w0 = self.raw("watcher0")
        self.assertEqual(w0.subscribe([("will/#", 0)]), [0])
        c = self.raw("qos-will", will=("will/q1", b"q1", 1, False))
        c.close()
        got = w1.recv_publish()
        self.assertEqual((got.topic, got.qos), ("will/q1", 1))
        self.assertNotEqual(got.pid, 0)
        self.assertEqual(w0.recv_publish().qos, 0)

    def test_will_not_published_for_taken_over_session_twice(self):
        """Takeover [MQTT-3.1.4-2] closes the old connection; its will is
        published at most once, and the new connection's will is not."""
        w = self.watcher()
        self.raw("same", will=("will/old", b"old", 0, False))
        new = self.raw("same", will=("will/new", b"new", 0, False))
        new.ping()
        new.send(DISCONNECT_PKT)
        control = self.raw("ctl", will=("will/ctl", b"ctl", 0, False))
        control.close()
        topics = []
        for _ in range(5):
            got = w.recv_publish()
            topics.append(got.topic)
            if got.topic == "will/ctl":
                break
        self.assertIn("will/ctl", topics)
        self.assertNotIn("will/new", topics)
        self.assertLessEqual(topics.count("will/old"), 1, topics)


if __name__ == "__main__":
    main()
