#!/usr/bin/python3
# ctest: TIMEOUT 120
"""41 cluster stream expiry: a QoS 1/2 message's Message Expiry Interval
counts its time in the JetStream stream (issue 16). A persistent MQTT 5
session on node b; b killed (kill -9); at node a, messages published with
a 2 s and a 3600 s expiry are acknowledged; b restarted after the short one
expired: the session gets only the long one [MQTT-3.3.2-5], with the time
it waited taken off its interval [MQTT-3.3.2-6], and b counts the expired
one in wisp_messages_dropped_total{reason="expired"}. Before, b gave the
expired message, with a fresh 2 s, to the session.
nats-server must be installed (WISP_NATS_SERVER): a missing one fails the
test, never skips it."""
import os
import queue
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import main  # noqa: E402
from v5_clients import paho5, paho5_stop, paho5_subscribe  # noqa: E402
from wisp_cluster import WAIT, ClusterCase  # noqa: E402

SHORT = 2  # seconds: expires while b is down
LONG = 3600


def publish_v5(c, topic, payload, qos, expiry):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = expiry
    info = c.publish(topic, payload, qos=qos, properties=props)
    got = c.pubacks.get(timeout=WAIT)
    assert got == info.mid, (got, info.mid)


class StreamExpiryTest(ClusterCase):
    node_names = ("a", "b")
    persistent = ("b",)

    def session(self):
        c = paho5(self.nodes["b"].port, "keep", clean_start=False, session_expiry=LONG)
        self.addCleanup(paho5_stop, c)
        return c

    def test_message_expired_in_the_stream_is_not_delivered(self):
        keep = self.session()
        self.assertEqual(paho5_subscribe(keep, "ex/#", qos=2), [2])
        paho5_stop(keep)
        b = self.nodes["b"]
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(timeout=WAIT)
        # Published at once: a still sends what b wanted (b is not yet
        # forgotten), so JetStream keeps it for b's consumer.
        pub = paho5(self.nodes["a"].port, "pub")
        self.addCleanup(paho5_stop, pub)
        published = time.monotonic()
        for qos in (1, 2):
            publish_v5(pub, "ex/short/%d" % qos, b"short", qos, SHORT)
            publish_v5(pub, "ex/long/%d" % qos, b"long", qos, LONG)
        # What is tested is time passing: the short ones' interval must be
        # over before b reads the stream again.
        time.sleep(max(0.0, published + SHORT + 1 - time.monotonic()))
        offset = b.log_size()
        self.start_node("b", offset=offset)
        waited = time.monotonic() - published
        keep = self.session()
        got = []
        try:
            while len(got) < 4:
                got.append(keep.received.get(timeout=5))
        except queue.Empty:
            pass
        self.assertEqual(sorted(m.topic for m in got), ["ex/long/1", "ex/long/2"],
                         "only the unexpired messages reach the session [MQTT-3.3.2-5]")
        for m in got:
            left = m.properties.MessageExpiryInterval
            self.assertLessEqual(left, LONG - int(waited) + 1,
                                 "the time in the stream comes off the interval [MQTT-3.3.2-6]")
            self.assertGreater(left, LONG - int(waited) - 30)
        status, text = b.get("/metrics")
        self.assertEqual(status, 200)
        m = re.search(r'wisp_messages_dropped_total\{reason="expired"\} (\d+)', text)
        self.assertIsNotNone(m, text)
        self.assertEqual(int(m.group(1)), 2)


if __name__ == "__main__":
    main()
