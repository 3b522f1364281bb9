#!/usr/bin/python3
"""04 retain: retained messages as a subscriber sees them."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import BrokerTestCase, main  # noqa: E402


class RetainTest(BrokerTestCase):

    def test_retained_reaches_later_subscriber_with_retain_flag(self):
        """[MQTT-3.3.1-6][MQTT-3.3.1-8] mosquitto_pub -r, then a new
        mosquitto_sub gets the message with the retain flag set."""
        self.pub("ret/t", "stored", qos=1, retain=True)
        s = self.sub("ret/t").wait_subscribed()
        self.assertEqual(s.get(), ("ret/t", True, 0, "stored"))

    def test_live_delivery_has_retain_0(self):
        """[MQTT-3.3.1-9] a subscriber that exists when a retained message is
        published receives it with retain 0; a later one with retain 1."""
        live = self.raw()
        self.assertEqual(live.subscribe([("live/t", 1)]), [1])
        pub = self.raw()
        pub.publish("live/t", "r", qos=1, retain=True)
        got = live.recv_publish()
        self.assertEqual((got.payload, got.retain), (b"r", False))
        late = self.raw()
        self.assertEqual(late.subscribe([("live/t", 1)]), [1])
        got = late.recv_publish()
        self.assertEqual((got.payload, got.retain), (b"r", True))

    def test_zero_length_retained_clears(self):
        """[MQTT-3.3.1-10] a zero-length retained PUBLISH is delivered as
        normal and removes the retained message; [MQTT-3.3.1-11] it is not
        stored itself. A later 'clr/#' subscriber gets only the other topic."""
        pub = self.raw()
        pub.publish("clr/gone", "x", qos=1, retain=True)
        pub.publish("clr/kept", "k", qos=1, retain=True)
        live = self.raw()
        self.assertEqual(live.subscribe([("clr/gone", 0)]), [0])
        self.assertEqual(live.recv_publish().payload, b"x")
        pub.publish("clr/gone", b"", qos=1, retain=True)
        got = live.recv_publish()
        self.assertEqual((got.topic, got.payload, got.retain), ("clr/gone", b"", False))
        later = self.raw()
        self.assertEqual(later.subscribe([("clr/#", 0)]), [0])
        got = later.recv_publish()
        self.assertEqual((got.topic, got.payload, got.retain), ("clr/kept", b"k", True))
        later.assert_no_packet(0.5)

    def test_mosquitto_pub_null_retained_clears(self):
        """mosquitto_pub -n -r clears a retained message (mosquitto_sub then
        receives only the control topic)."""
        self.pub("nclr/a", "a", retain=True)
        self.pub("nclr/b", "b", retain=True)
        self.pub("nclr/a", None, retain=True)
        s = self.sub("nclr/#").wait_subscribed()
        self.assertEqual(s.get(), ("nclr/b", True, 0, "b"))
        s.assert_nothing(0.5)

    def test_new_retained_replaces_old(self):
        """[MQTT-3.3.1-5] only the latest retained message per topic is kept."""
        pub = self.raw()
        for v in ("v1", "v2", "v3"):
            pub.publish("rep/t", v, qos=1, retain=True)
        s = self.raw()
        s.subscribe("rep/t")
        self.assertEqual(s.recv_publish().payload, b"v3")
        s.assert_no_packet(0.5)

    def test_non_retained_publish_keeps_retained(self):
        """[MQTT-3.3.1-12] a PUBLISH with retain 0 neither stores nor replaces."""
        pub = self.raw()
        pub.publish("nr/t", "keep", qos=1, retain=True)
        pub.publish("nr/t", "transient", qos=1, retain=False)
        pub.publish("nr/only-live", "transient", qos=1, retain=False)
        s = self.raw()
        s.subscribe("nr/#")
        got = s.recv_publish()
        self.assertEqual((got.topic, got.payload, got.retain), ("nr/t", b"keep", True))
        s.assert_no_packet(0.5)

    def test_retained_with_wildcard_subscriptions(self):
        """[MQTT-3.3.1-6] a wildcard subscription receives every matching
        retained message, each with retain 1, and no others."""
        pub = self.raw()
        topics = ["w/a/1", "w/b/1", "w/a/2", "w", "other/1"]
        for t in topics:
            pub.publish(t, t, qos=1, retain=True)
        for flt, expect in (("w/+/1", ["w/a/1", "w/b/1"]),
                            ("w/#", ["w", "w/a/1", "w/a/2", "w/b/1"]),
                            ("+/1", ["other/1"])):
            with self.subTest(filter=flt):
                s = self.raw()
                self.assertEqual(s.subscribe([(flt, 1)]), [1])
                got = [s.recv_publish() for _ in expect]
                self.assertEqual(sorted(p.topic for p in got), sorted(expect))
                self.assertTrue(all(p.retain for p in got))
                s.assert_no_packet(0.3)
                s.close()

    def test_dollar_retained_not_sent_to_hash(self):
        """[MQTT-4.7.2-1] retained '$foo/x' is not sent to a '#' or '+/x'
        subscriber (which do get the plain retained topic); '$foo/#' gets it."""
        pub = self.raw()
        pub.publish("$foo/x", "dollar", qos=1, retain=True)
        pub.publish("plain/x", "plain", qos=1, retain=True)
        for flt in ("#", "+/x"):
            with self.subTest(filter=flt):
                s = self.raw()
                s.subscribe(flt)
                self.assertEqual(s.recv_publish().topic, "plain/x")
                s.assert_no_packet(0.5)
                s.close()
        s = self.raw()
        s.subscribe("$foo/#")
        got = s.recv_publish()
        self.assertEqual((got.topic, got.payload, got.retain), ("$foo/x", b"dollar", True))

    def test_retained_qos_is_downgraded_to_subscription(self):
        """[MQTT-3.8.4-6] a retained QoS 1 message goes to a QoS 0 subscriber
        at QoS 0 and to a QoS 2 subscriber at QoS 1."""
        pub = self.raw()
        pub.publish("rq/t", "q1", qos=1, retain=True)
        for sub_qos, expect in ((0, 0), (2, 1)):
            s = self.raw()
            self.assertEqual(s.subscribe([("rq/t", sub_qos)]), [sub_qos])
            got = s.recv_publish()
            self.assertEqual((got.qos, got.retain, got.payload), (expect, True, b"q1"))
            s.close()


if __name__ == "__main__":
    main()
