#!/usr/bin/python3
# ctest: TIMEOUT 180
"""36 cluster share dollar: a topic beginning with '$' never reaches a
subscription whose filter starts with a wildcard, on another node either
[MQTT-4.7.2-1] (issue 16). Two Wisp nodes and one nats-server on loopback.

NATS's own wildcards know nothing of '$': a shared group's queue
subscription for "$share/g/#" is on the subject "wisp.>", which also takes
"wisp.$dev.x". A client on a publishes "$dev/x" (any client may: only $SYS
is the broker's, and $SYS never crosses), which crosses to NATS because an
ordinary subscriber on b wants "$dev/#". What a user sees: that subscriber
gets it, and so does a member of "$share/g3/$dev/#"; the ordinary "#" and
"+/x" subscribers and the members of "$share/g/#" and "$share/g2/+/x" on b
(and of "$share/home/#" on a) get the next message, "plain/x", first: at
QoS 0 (core NATS, the groups' queue subscriptions) and at QoS 1 (the
JetStream stream and the groups' consumers).

nats-server must be installed (WISP_NATS_SERVER): a missing one fails the
test, never skips it."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import main  # noqa: E402
from wisp_cluster import ClusterCase, InterestNode  # noqa: E402

WAIT = 20.0  # seconds any awaited cluster event may take


class ClusterShareDollarTest(ClusterCase):
    node_class = InterestNode
    node_names = ("a", "b")
    settle = True
    wait = WAIT
    maxDiff = None

    def test_dollar_topic_skips_wildcard_led_filters_across_nodes(self):
        for qos in (0, 1):
            with self.subTest(qos=qos):
                self.check_round(qos)

    def check_round(self, qos):
        # Fresh groups each round: a QoS 0 round's groups would also take
        # the QoS 1 round's messages, at their granted QoS.
        r = "q%d" % qos
        dollar = self.client("b", "dollar-" + r)
        self.assertEqual(dollar.subscribe([("$dev/#", qos)]), [qos])
        dollar_group = self.client("b", "g3-" + r)
        self.assertEqual(dollar_group.subscribe([("$share/g3%s/$dev/#" % r, qos)]), [qos])
        wildcard_led = {
            "hash": ("b", "#"),
            "plus": ("b", "+/x"),
            "group-hash": ("b", "$share/g%s/#" % r),
            "group-plus": ("b", "$share/g2%s/+/x" % r),
            "group-home": ("a", "$share/home%s/#" % r),
        }
        subs = {}
        for name, (node, f) in wildcard_led.items():
            c = self.client(node, "%s-%s" % (name, r))
            self.assertEqual(c.subscribe([(f, qos)]), [qos], f)
            subs[name] = c
        pub = self.client("a", "pub-" + r)
        pub.publish("$dev/x", b"dollar-" + r.encode(), qos=qos, pid=1)
        pub.publish("plain/x", b"plain-" + r.encode(), qos=qos, pid=2)
        # Positive controls: "$dev/x" crossed to b and a group whose filter
        # starts with '$' takes it.
        for c in (dollar, dollar_group):
            p = c.recv_publish(timeout=WAIT)
            self.assertEqual((p.topic, p.payload), ("$dev/x", b"dollar-" + r.encode()))
        # NATS keeps one publisher's order, and so does each node's inbox:
        # "plain/x" first means "$dev/x" never came.
        got = {}
        for name, c in subs.items():
            p = c.recv_publish(timeout=WAIT)
            got[name] = (wildcard_led[name][1], p.topic, p.payload)
        want = {name: (f, "plain/x", b"plain-" + r.encode()) for name, (_, f) in wildcard_led.items()}
        self.assertEqual(got, want, "[MQTT-4.7.2-1]")


if __name__ == "__main__":
    main()
