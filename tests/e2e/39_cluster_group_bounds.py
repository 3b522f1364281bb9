#!/usr/bin/python3
# ctest: TIMEOUT 180
"""39 cluster shared groups, bounded: a node holds at most cluster.max_groups
shared subscription groups (issue 16: each group new to a node costs
nats-server a queue subscription and one or two durable JetStream
consumers, whichever client asks; docs/cluster.md "Shared subscriptions").

Two Wisp nodes and one nats-server -js on loopback; node a has max_groups 3.
What a user sees:
  - three groups are granted; a fourth group's SUBACK says Quota exceeded,
    0x97 to an MQTT 5 client [MQTT-3.9.3], 0x80 to a 3.1.1 one; the node
    counts each refusal in $SYS/broker/cluster/groups/refused and logs the
    episode once;
  - a subscription joining a group the node holds is still granted, and a
    QoS 1 message published on b reaches each granted group once;
  - once a group's last member unsubscribed, a new group is granted again
    (and a refusal after that is a new episode, logged again).

ShareConnectionDropsTest: the second connection, "<node>-share", carries the
groups' queue subscriptions and the cluster's own (claims, handovers, $SYS
figures, interest announcements). With the node's delivery thread starved
(a debug build's WISP_DEBUG_SLOW_NATS_DELIVERY) and cluster.inbound_queue
16, a NATS client flooding the figures subject makes cnats drop at that
subscription's pending limit: counted in cluster/messages/pending_dropped,
not only logged.

nats-server must be installed (WISP_NATS_SERVER): a missing one fails the
test, never skips it."""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import main  # noqa: E402
from wisp_cluster import ClusterCase, Node as ClusterNode, load_script  # noqa: E402

V5Client = load_script("v5_connect", "16_v5_connect.py").V5Client

WAIT = 20.0  # seconds any awaited cluster event may take
MAX_GROUPS = 3
REFUSING = "refusing new shared subscription groups"
QUOTA_EXCEEDED = 0x97  # MQTT 5 SUBACK reason [MQTT-3.9.3]
FAILURE = 0x80  # the 3.1.1 SUBACK failure return code
FIGURES = "$WISP.wisp.figures"  # the $SYS figures' subject, on <node>-share (cluster/totals.c)


class Node(ClusterNode):
    def config(self):
        cfg = super().config()
        cfg["cluster"]["interest_interval"] = 1
        cfg["cluster"]["max_groups"] = MAX_GROUPS
        return cfg


class GroupBoundsTest(ClusterCase):
    node_class = Node
    node_names = ("a", "b")
    settle = True

    def setUp(self):
        super().setUp()
        for name, n in self.nodes.items():
            self.assertIsNotNone(n.wait_log("JetStream ready: QoS 1/2 cross nodes", timeout=WAIT),
                                 "node %s: JetStream never ready" % name)

    def metric(self, node, name):
        m = re.search(r"(?m)^wisp_%s ([0-9]+)$" % name, self.nodes[node].get("/metrics")[1])
        self.assertIsNotNone(m, "no %s on node %s's /metrics" % (name, node))
        return int(m.group(1))

    def member(self, client_id, share):
        c = self.client("a", client_id)
        self.assertEqual(c.subscribe([(share, 1)]), [1], "%s granted" % share)
        return c

    def v5(self, client_id):
        c = V5Client(self.nodes["a"].port)
        self.clients.append(c)
        self.assertEqual(c.connect5(client_id)[1], 0)
        return c

    def expect_once(self, clients, payload):
        """payload reaches exactly one of clients (a group's members)."""
        got = []
        deadline = time.monotonic() + WAIT
        while not got and time.monotonic() < deadline:
            for c in clients:
                try:
                    p = c.recv_publish(timeout=0.05)
                except (AssertionError, OSError):
                    continue  # nothing from this one within the slice
                got.append(p.payload)
        self.assertEqual(got, [payload])
        for c in clients:
            c.assert_no_packet(wait=0.3)  # no second copy in the group

    def test_new_groups_past_max_groups_are_refused_and_held_ones_joined(self):
        a = self.nodes["a"]
        g1 = self.member("m-g1", "$share/g1/t")
        g2 = self.member("m-g2", "$share/g2/t")
        g3 = self.member("m-g3", "$share/g3/t")
        self.assertEqual(self.metric("a", "cluster_groups_refused_total"), 0)

        # A fourth group: Quota exceeded for MQTT 5, 0x80 for 3.1.1.
        late5 = self.v5("late-v5")
        self.assertEqual(late5.subscribe5("$share/g4/t", qos=1), [QUOTA_EXCEEDED])
        late3 = self.client("a", "late-311")
        self.assertEqual(late3.subscribe([("$share/g5/t", 1), ("plain/t", 1)]), [FAILURE, 1],
                         "only the new group's filter is refused")
        self.assertEqual(self.metric("a", "cluster_groups_refused_total"), 2)
        line = a.wait_log(REFUSING, timeout=WAIT)
        self.assertIsNotNone(line, "node a did not log the refusal")
        self.assertIn("cluster.max_groups (3)", line)
        self.assertIn("$SYS/broker/cluster/groups/refused", line)
        self.assertEqual(a.log().count(REFUSING), 1, "logged once for the episode")

        # Joining a group the node holds is still granted.
        joiner = self.member("joiner-g1", "$share/g1/t")

        # A message published on b reaches each granted group once, and
        # no refused subscriber.
        self.client("b", "pub-b").publish("t", b"first", qos=1, pid=1)
        self.expect_once([g1, joiner], b"first")
        self.expect_once([g2], b"first")
        self.expect_once([g3], b"first")
        late5.assert_no_packet(wait=0.3)
        late3.assert_no_packet(wait=0.3)

        # g2's last member leaves: a new group fits again, and the next
        # refusal starts a new episode, logged again.
        g2.unsubscribe(["$share/g2/t"])
        self.assertEqual(late3.subscribe([("$share/g5/t", 1)], pid=2), [1])
        self.assertEqual(late5.subscribe5("$share/g6/t", qos=1, pid=2), [QUOTA_EXCEEDED])
        self.assertEqual(self.metric("a", "cluster_groups_refused_total"), 3)
        self.assertEqual(a.log().count(REFUSING), 2, "a new episode is logged again")
        self.client("b", "pub-b2").publish("t", b"second", qos=1, pid=1)
        self.expect_once([g1, joiner], b"second")
        self.expect_once([g3], b"second")
        self.expect_once([late3], b"second")
        g2.assert_no_packet(wait=0.3)
        late5.assert_no_packet(wait=0.3)


def threads(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"(?m)^Threads:\s+(\d+)$", f.read()).group(1))


class GroupThreadsTest(ClusterCase):
    """Groups cost no thread each: 20 groups (10 with a "/#" filter, which
    need a second consumer) leave the node's thread count as it was, give
    or take the few cnats or the loop start on their own. Before, each
    group's consumer had its own delivery thread: +30 here."""
    node_names = ("a",)
    GROUPS = 20

    def test_groups_do_not_each_cost_a_thread(self):
        a = self.nodes["a"]
        self.assertIsNotNone(a.wait_log("JetStream ready: QoS 1/2 cross nodes", timeout=WAIT))
        m = self.client("a", "warm")
        # One group first: whatever cnats starts once for the first
        # consumer (its shared delivery thread) is not counted per group.
        self.assertEqual(m.subscribe([("$share/warm/t", 1)]), [1])
        before = threads(a.proc.pid)
        c = self.client("a", "many")
        for i in range(self.GROUPS):
            share = "$share/g%d/%s" % (i, "t/#" if i % 2 else "t")
            # The SUBACK waits until the group's consumers are bound.
            self.assertEqual(c.subscribe([(share, 1)], pid=i + 1), [1], share)
        after = threads(a.proc.pid)
        self.assertLessEqual(after - before, 3, "threads %d -> %d for %d groups" % (before, after, self.GROUPS))


class SlowDeliveryNode(ClusterNode):
    def config(self):
        cfg = super().config()
        cfg["cluster"]["inbound_queue"] = 16
        return cfg

    def _env(self):
        return dict(super()._env(), WISP_DEBUG_SLOW_NATS_DELIVERY="1")


class ShareConnectionDropsTest(ClusterCase):
    node_class = SlowDeliveryNode
    node_names = ("a",)

    def metric(self, node, name):
        return GroupBoundsTest.metric(self, node, name)

    def nats_flood(self, subject, count):
        """Publishes count small messages on subject as a plain NATS client
        (no Wisp headers: the node ignores them), so nats-server has them all."""
        self.nats.publish_plain(subject, [b"x"] * count)

    def test_drops_of_the_clusters_own_subscriptions_are_counted(self):
        a = self.nodes["a"]
        # a-share connects in the background: its subscription first.
        self.nats.wait_subjects("a-share", [FIGURES])
        self.assertEqual(self.metric("a", "cluster_pending_dropped_total"), 0)
        # 2,000 messages at 2 ms each on a's delivery thread: far more than
        # 16 wait in cnats at once for the figures' subscription on a-share.
        self.nats_flood(FIGURES, 2000)
        self.assertIsNotNone(a.wait_log("NATS's client is dropping messages from NATS", timeout=WAIT), a.log_banner())
        deadline = time.monotonic() + WAIT
        while self.metric("a", "cluster_pending_dropped_total") == 0:
            self.assertLess(time.monotonic(), deadline, "cnats's drops on a-share never counted")
            time.sleep(0.05)
        self.assertLessEqual(self.metric("a", "cluster_pending_dropped_total"), 2000)


if __name__ == "__main__":
    main()
