#!/usr/bin/python3
# ctest: TIMEOUT 240
"""24 cluster: three Wisp nodes and one nats-server on loopback (issue 16,
first slice). A message published on one node reaches the subscribers on
the others exactly once, in order, with its v5 properties; a node gets from
NATS only what its own subscribers want (checked on nats-server's
monitoring endpoint: the NATS subscriptions each node holds and the
messages NATS sent it); unsubscribing stops the flow; a node that loses
NATS keeps serving its local clients and rejoins when NATS is back.

nats-server must be installed (WISP_NATS_SERVER, found by CMake): a
missing one fails the test, never skips it."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import PUBACK, PUBLISH, SUBACK, RawClient, main, publish_pkt, subscribe_pkt  # noqa: E402
from v5_clients import paho5, paho5_stop, paho5_subscribe  # noqa: E402
from wisp_cluster import (NATS_BIN, PREFIX, STOP_BOUND, WAIT, ClusterCase, Nats,  # noqa: E402,F401 - re-exported
                          Node)


class ClusterTest(ClusterCase):
    node_names = ("a", "b", "c")

    def make_node(self, name, persistence=None):
        # This module's Node, looked up at each call: scripts that load this
        # one may replace it with their own.
        if persistence is None:
            persistence = name in self.persistent
        return Node(name, self.nats.port, persistence=persistence)

    def test_fan_out_exactly_once_to_interested_nodes_only(self):
        sub_b = self.client("b", "sub-b")
        sub_c = self.client("c", "sub-c")
        # Overlapping filters on c: two NATS subscriptions, still one copy.
        self.assertEqual(sub_b.subscribe([("fan/+/x", 1)]), [1])
        self.assertEqual(sub_c.subscribe([("fan/#", 1), ("fan/+/x", 1)]), [1, 1])
        self.nats.wait_subjects("b", {PREFIX + ".fan.*.x"})
        self.nats.wait_subjects("c", {PREFIX + ".fan.>", PREFIX + ".fan", PREFIX + ".fan.*.x"})
        self.assertEqual(self.nats.connections()["a"][0], set(), "a has no subscriber: no NATS interest")
        # Its JetStream set-up over (the retained bucket), NATS sends a nothing.
        self.assertIsNotNone(self.nodes["a"].wait_log("in step with bucket", timeout=WAIT))
        a_before = self.nats.out_msgs("a")
        pub = self.client("a", "pub-a")
        for i in range(1, 4):
            pub.publish("fan/%d/x" % i, b"m%d" % i, qos=1, pid=i)
        want = [("fan/%d/x" % i, b"m%d" % i) for i in range(1, 4)]
        # In order and once each: a duplicate would come before the next one.
        self.expect_payloads(sub_b, want)
        self.expect_payloads(sub_c, want)
        sub_c.assert_no_packet(wait=0.3)  # no trailing copy of m3
        self.assertEqual(self.nats.out_msgs("a"), a_before, "NATS sent a (no subscribers) messages")

    def test_node_without_interest_gets_nothing_and_unsubscribe_stops_flow(self):
        sub_b = self.client("b", "sub-b")
        self.assertEqual(sub_b.subscribe([("u/1", 0), ("u/keep", 0)]), [0, 0])
        self.nats.wait_subjects("b", {PREFIX + ".u.1", PREFIX + ".u.keep"})
        sub_c = self.client("c", "sub-c")
        self.assertEqual(sub_c.subscribe([("elsewhere", 0)]), [0])
        self.nats.wait_subjects("c", {PREFIX + ".elsewhere"})
        c_before = self.nats.out_msgs("c")
        pub = self.client("a", "pub-a")
        pub.publish("u/1", b"one")
        self.expect_payloads(sub_b, [("u/1", b"one")])
        self.assertEqual(self.nats.out_msgs("c"), c_before, "c got a message none of its clients wants")
        sub_b.unsubscribe(["u/1"], pid=7)
        self.nats.wait_subjects("b", {PREFIX + ".u.1"}, present=False)
        b_before = self.nats.out_msgs("b")
        pub.publish("u/1", b"after unsubscribe")
        pub.publish("u/keep", b"marker")
        self.expect_payloads(sub_b, [("u/keep", b"marker")])
        self.assertEqual(self.nats.out_msgs("b"), b_before + 1, "NATS still sent b the unsubscribed topic")
        # The last local subscriber gone by disconnecting also withdraws interest.
        sub_b.close()
        self.nats.wait_subjects("b", {PREFIX + ".u.keep"}, present=False)

    def test_shared_subscription_members_on_another_node_get_the_message(self):
        # The group is a NATS queue subscription on b's second connection
        # (26_cluster_state tests the split): the member on b gets every
        # message published on a, and leaving the group withdraws interest.
        member = self.client("b", "member-b")
        self.assertEqual(member.subscribe([("$share/g/sh/+", 1)]), [1])
        self.nats.wait_subjects("b-share", {PREFIX + ".sh.*"})
        pub = self.client("a", "pub-a")
        pub.publish("sh/1", b"shared", qos=1, pid=1)
        self.expect_payloads(member, [("sh/1", b"shared")])
        member.unsubscribe(["$share/g/sh/+"], pid=2)
        self.nats.wait_subjects("b-share", {PREFIX + ".sh.*"}, present=False)

    def test_restarted_node_resubscribes_for_its_stored_sessions(self):
        # A node with persistence restores its offline sessions at start-up,
        # before the cluster starts: their filters are interest too.
        d = Node("d", self.nats.port, persistence=True)
        self.nodes["d"] = d
        d.start()
        self.assertIsNotNone(d.wait_log("connected to NATS as node 'd'", timeout=WAIT))
        keep = RawClient(d.port)
        self.assertEqual(keep.connect("keep", clean=False), 0)
        self.assertEqual(keep.subscribe([("rs/t", 1)]), [1])
        keep.close()
        self.nats.wait_subjects("d", {PREFIX + ".rs.t"})
        d.stop()
        d.exit_status = None
        offset = d.log_size()
        d.start()
        self.assertIsNotNone(d.wait_log("connected to NATS as node 'd'", offset=offset, timeout=WAIT))
        self.nats.wait_subjects("d", {PREFIX + ".rs.t"})
        pub = self.client("a", "pub-a")
        pub.publish("rs/t", b"queued", qos=1, pid=1)
        back = RawClient(d.port)
        self.clients.append(back)
        self.assertEqual(back.connect("keep", clean=False), 0)
        self.expect_payloads(back, [("rs/t", b"queued")])

    def test_node_with_subscribed_client_stops_promptly(self):
        # cnats's nats_CloseAndWait waits (5 s) for every connection still
        # held: a node must release all of them before it, JetStream
        # worker's included. The bound is generous for a loaded machine.
        sub = self.client("a", "stop-sub")
        self.assertEqual(sub.subscribe([("st/#", 1)]), [1])
        self.nats.wait_subjects("a", {PREFIX + ".st.>"})
        pub = self.client("a", "stop-pub")
        pub.publish("st/t", b"x", qos=1, pid=1)  # its PUBACK: the stream stored it
        self.expect_payloads(sub, [("st/t", b"x")])
        began = time.monotonic()
        self.nodes["a"].stop()  # returns on the process's exit; asserts no leak
        took = time.monotonic() - began
        self.assertLess(took, STOP_BOUND, "node a took %.1fs to stop on SIGTERM" % took)

    def test_node_started_while_nats_is_down_serves_then_joins(self):
        # Every NATS connection a node opens (main, -share, -js) retries in
        # the background: the loop answers at once and SIGTERM is honoured.
        self.nats.kill()
        down = Node("down", self.nats.port)
        self.nodes["down"] = down
        down.start()  # returns once it accepts connections
        d = Node("d", self.nats.port)
        self.nodes["d"] = d
        d.start()
        self.assertIsNotNone(d.wait_log("joining the cluster", timeout=WAIT))
        local = self.client("d", "local-d")
        self.assertEqual(local.subscribe([("dn/t", 1)]), [1])
        pub = self.client("d", "pub-d")
        pub.send(publish_pkt("dn/t", b"local", qos=1, pid=7))
        p = local.recv_publish(timeout=WAIT)
        self.assertEqual((p.topic, p.payload, p.qos), ("dn/t", b"local", 1))
        down.stop()  # exits on SIGTERM while NATS is still away; no leak
        offset = d.log_size()
        self.nats.start()
        self.assertIsNotNone(d.wait_log("connected to NATS as node 'd'", offset=offset, timeout=WAIT),
                             "node d did not join when NATS came")
        # The held PUBACK goes once JetStream has the message (docs/cluster.md).
        ack = pub.expect(PUBACK, timeout=WAIT)
        self.assertEqual(ack.pid, 7)
        for name in ("a", "b", "c"):
            self.assertIsNotNone(self.nodes[name].wait_log("connected to NATS as node '%s'" % name,
                                                           offset=0, timeout=WAIT))
        remote = self.client("b", "remote-b")
        # "local" was in the stream before remote-b subscribed, and node b's
        # consumer may read it once the subscription is there: it then
        # reaches remote-b too (docs/cluster.md, "QoS 1 and 2"), even before
        # the SUBACK (MQTT 3.1.1 section 3.8.4 permits that), which waits
        # for the other nodes' answers.
        remote.send(subscribe_pkt(1, [("dn/t", 1)]))
        ahead = []
        while True:
            pkt = remote.recv_packet(WAIT)
            if pkt.type != PUBLISH:
                break
            ahead.append(pkt)
        self.assertEqual((pkt.type, pkt.pid, list(pkt.body[2:])), (SUBACK, 1, [1]))
        self.assertLessEqual(len(ahead), 1, "only \"local\" may come before the SUBACK")
        remote.stash.extend(ahead)
        self.nats.wait_subjects("b", {PREFIX + ".dn.t"})
        pub.publish("dn/t", b"across", qos=1, pid=8)
        # "across" must come, and last.
        first = remote.recv_publish(timeout=WAIT)
        if first.payload == b"local":
            first = remote.recv_publish(timeout=WAIT)
        self.assertEqual((first.topic, first.payload), ("dn/t", b"across"))
        self.expect_payloads(local, [("dn/t", b"across")])

    def test_v5_properties_and_escaped_topics_cross_nodes(self):
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        sub = paho5(self.nodes["c"].port, "v5-sub")
        pub = paho5(self.nodes["a"].port, "v5-pub")
        try:
            self.assertEqual(paho5_subscribe(sub, "v5/+/t", qos=1), [1])
            self.nats.wait_subjects("c", {PREFIX + ".v5.*.t"})
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("k", "v"), ("k", "second")]
            props.ContentType = "text/plain"
            props.CorrelationData = b"\x00\x01"
            props.MessageExpiryInterval = 3600
            # A level with a space and a dot: NATS refuses the first, and
            # nats-server's mapping writes the second as '//'.
            pub.publish("v5/a b.c/t", b"payload", qos=1, properties=props)
            msg = sub.received.get(timeout=WAIT)
            self.assertEqual(msg.topic, "v5/a b.c/t")
            self.assertEqual(msg.payload, b"payload")
            self.assertEqual(msg.qos, 1)
            self.assertEqual(msg.properties.UserProperty, [("k", "v"), ("k", "second")])
            self.assertEqual(msg.properties.ContentType, "text/plain")
            self.assertEqual(msg.properties.CorrelationData, b"\x00\x01")
            self.assertTrue(0 < msg.properties.MessageExpiryInterval <= 3600)
        finally:
            paho5_stop(pub)
            paho5_stop(sub)

    def test_nats_loss_is_survived_and_healed(self):
        local = self.client("a", "local-a")
        remote = self.client("b", "remote-b")
        self.assertEqual(local.subscribe([("f/t", 0)]), [0])
        self.assertEqual(remote.subscribe([("f/t", 0)]), [0])
        self.nats.wait_subjects("b", {PREFIX + ".f.t"})
        pub = self.client("a", "pub-a")
        pub.publish("f/t", b"before")
        self.expect_payloads(local, [("f/t", b"before")])
        self.expect_payloads(remote, [("f/t", b"before")])
        offsets = {n: b.log_size() for n, b in self.nodes.items()}
        self.nats.kill()
        for name in ("a", "b"):
            self.assertIsNotNone(self.nodes[name].wait_log("lost the NATS connection", offset=offsets[name],
                                                           timeout=WAIT), "node %s did not notice" % name)
        # Not ready for new clients, and says why; the gauge says it too.
        status, body = self.nodes["a"].wait_ready(False)
        self.assertEqual((status, body), (503, "cluster: not connected to NATS\n"))
        self.assertRegex(self.nodes["a"].get("/metrics")[1], r"(?m)^wisp_cluster_connected 0$")
        # Local delivery goes on without NATS.
        pub.publish("f/t", b"during")
        self.expect_payloads(local, [("f/t", b"during")])
        offsets = {n: b.log_size() for n, b in self.nodes.items()}
        self.nats.start()
        for name, b in self.nodes.items():
            self.assertIsNotNone(b.wait_log("connected to NATS as node '%s'" % name, offset=offsets[name],
                                            timeout=WAIT), "node %s did not reconnect" % name)
        self.nats.wait_subjects("b", {PREFIX + ".f.t"})
        self.assertEqual(self.nodes["a"].wait_ready(True), (200, "ready\n"))
        self.assertRegex(self.nodes["a"].get("/metrics")[1], r"(?m)^wisp_cluster_connected 1$")
        pub.publish("f/t", b"after")
        self.expect_payloads(local, [("f/t", b"after")])
        # "during" may still reach b (cnats buffers while reconnecting):
        # at most once, and before "after".
        got = [remote.recv_publish(timeout=WAIT).payload]
        if got[0] == b"during":
            got.append(remote.recv_publish(timeout=WAIT).payload)
        self.assertEqual(got[-1], b"after", got)
        remote.assert_no_packet(wait=0.3)
        # Each node's second connection (<node>-share, the claims) is back
        # too, and nothing was dropped: its coming back once read as cnats
        # dropping messages, a false warning at every reconnect.
        for name in ("a", "b"):  # the nodes with clients, which they ask for again
            b = self.nodes[name]
            self.assertIsNotNone(b.wait_log("back on NATS: asked again for the", offset=offsets[name],
                                            timeout=WAIT), "node %s: claim connection not back" % name)
            self.assertNotIn("NATS's client is dropping messages", b.log()[offsets[name]:], "node %s" % name)


class NatsNativePublisherTest(ClusterCase):
    """A NATS-native publisher (no Wisp headers, so its copies carry no
    numbering) on a subject four of a node's filters match: NATS sends the
    node one copy per matching subscription, and each subscriber gets the
    message once per filter of its own, as from a local publisher. Before,
    every copy went to every matching subscriber: four each."""

    node_names = ("a",)
    make_node = ClusterTest.make_node

    def test_each_subscriber_gets_one_copy_per_own_filter(self):
        # Four filters of the node match nv/k1/t: four copies from NATS.
        wide = self.client("a", "native-wide")
        narrow = self.client("a", "native-narrow")
        exact = self.client("a", "native-exact")
        self.assertEqual(wide.subscribe([("nv/#", 0)]), [0])
        self.assertEqual(narrow.subscribe([("nv/+/t", 1)]), [1])
        self.assertEqual(exact.subscribe([("nv/k1/t", 0), ("nv/k2/#", 0)]), [0, 0])
        everything = self.client("a", "native-all")
        self.assertEqual(everything.subscribe([("#", 0)]), [0])
        self.nats.wait_subjects("a", {PREFIX + ".nv.>", PREFIX + ".nv", PREFIX + ".nv.*.t", PREFIX + ".nv.k1.t",
                                      PREFIX + ".nv.k2.>", PREFIX + ".nv.k2", PREFIX + ".>"})
        clients = (wide, narrow, exact, everything)
        payloads = [b"n%d" % i for i in range(5)] + [b"end"]
        self.nats.publish_plain(PREFIX + ".nv.k1.t", payloads)
        want = [("nv/k1/t", p) for p in payloads]
        # In order and once each: a second copy of one would come before
        # the next one (NATS sends a node all copies of one publish first).
        for c in clients:
            self.expect_payloads(c, want)
        # Nor a copy of the last: the next publish is what comes next.
        self.nats.publish_plain(PREFIX + ".nv.k1.t", [b"end2"])
        for c in clients:
            self.expect_payloads(c, [("nv/k1/t", b"end2")])
        # A '$' topic reaches no '#' filter through NATS's '>'
        # [MQTT-4.7.2-1]: had it, it would come before k2, published after.
        self.nats.publish_plain(PREFIX + ".$nv.x", [b"dollar"])
        self.nats.publish_plain(PREFIX + ".nv.k2.t", [b"k2"])
        for c in clients:
            self.expect_payloads(c, [("nv/k2/t", b"k2")])
        # A topic with a control character (U+0001) is refused as from an
        # MQTT client (handle_publish.c, [MQTT-1.5.4-3] allows it): had
        # it been routed, three of them would get it before k2again.
        self.nats.publish_plain(PREFIX + ".nv.k2.a%01b", [b"control"])
        self.nats.publish_plain(PREFIX + ".nv.k2.t", [b"k2again"])
        for c in clients:
            self.expect_payloads(c, [("nv/k2/t", b"k2again")])


if __name__ == "__main__":
    main()
