#!/usr/bin/python3
# ctest: TIMEOUT 300
"""26 cluster state: what is one broker's state stays one across three Wisp
nodes over one nats-server (issue 16, its cluster-wide state): a shared
subscription group spread over the nodes gets each message once, retained
messages reach subscribers on every node (also on a node started after the
message was retained), a client id connected at one node is taken over by a
connect at another, and a will from a client killed on one node reaches the
subscribers on the others.

nats-server must be installed (WISP_NATS_SERVER, found by CMake): a missing
one fails the test, never skips it."""

import os
import re
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import CONNACK, DISCONNECT, RawClient, main, mqtt_str, packet  # noqa: E402
from wisp_cluster import load_script  # noqa: E402

cluster24 = load_script("cluster24", "24_cluster.py")
PREFIX, WAIT = cluster24.PREFIX, cluster24.WAIT


class Node(cluster24.Node):
    """A node publishing $SYS every second (the cluster totals too)."""

    def config(self):
        cfg = super().config()
        cfg["sys_interval"] = 1
        return cfg


cluster24.Node = Node  # ClusterTest.setUp makes its nodes from this one


def connect5(client_id, clean=True, expiry=0):
    """A v5 CONNECT, with a Session Expiry Interval when expiry."""
    props = b"\x11" + struct.pack("!I", expiry) if expiry else b""
    var = mqtt_str("MQTT") + bytes([5, 0x02 if clean else 0]) + struct.pack("!H", 60) + bytes([len(props)]) + props
    return packet(0x10, var + mqtt_str(client_id))


class ClusterStateTest(cluster24.ClusterTest):
    # ClusterTest's own tests are 24's: not run again here.
    for _name in [n for n in vars(cluster24.ClusterTest) if n.startswith("test_")]:
        locals()[_name] = None
    del _name

    def collect(self, clients, count):
        """Receives PUBLISHes from any of clients until count arrived (or
        WAIT passed); returns [(client index, topic, payload)]."""
        got = []
        deadline = time.monotonic() + WAIT
        while len(got) < count and time.monotonic() < deadline:
            for i, c in enumerate(clients):
                try:
                    p = c.recv_publish(timeout=0.05)
                except AssertionError:
                    continue  # nothing from this one within the slice
                got.append((i, p.topic, p.payload))
        return got

    def metric(self, node, name):
        body = self.nodes[node].get("/metrics")[1]
        m = re.search(r"(?m)^wisp_%s (\d+)$" % name, body)
        return int(m.group(1)) if m else 0

    def wait_applied(self, nodes, at_least):
        """Waits until each node applied at_least retained records from the bucket."""
        deadline = time.monotonic() + WAIT
        for n in nodes:
            while self.metric(n, "cluster_retained_applied_total") < at_least:
                if time.monotonic() > deadline:
                    self.fail("node %s applied %d retained records, wanted %d" % (
                        n, self.metric(n, "cluster_retained_applied_total"), at_least))
                time.sleep(0.02)

    def retained(self, node, client_id, filt, count):
        """A new subscriber on node to filt: the count retained messages it
        is sent, sorted, and nothing more."""
        c = self.client(node, client_id)
        self.assertEqual(c.subscribe([(filt, 1)]), [1])
        got = []
        for _ in range(count):
            p = c.recv_publish(timeout=WAIT)
            self.assertTrue(p.retain, "a retained message is sent with RETAIN set [MQTT-3.3.1-6]")
            got.append((p.topic, p.payload))
        c.assert_no_packet(wait=0.3)  # each once, nothing stale
        return sorted(got)

    def test_retained_is_cluster_wide_and_reaches_a_late_node(self):
        for n in ("a", "b", "c"):
            self.assertIsNotNone(self.nodes[n].wait_log("in step with bucket", timeout=WAIT))
        pub = self.client("a", "pub-a")
        pub.publish("ret/x", b"kept", qos=1, retain=True, pid=1)
        pub.publish("ret/zz", b"marker", qos=1, retain=True, pid=2)
        # Every node follows the bucket, the publishing one too (its own echo).
        self.wait_applied(("a", "b", "c"), 2)
        both = [("ret/x", b"kept"), ("ret/zz", b"marker")]
        for n in ("b", "c", "a"):
            self.assertEqual(self.retained(n, "sub-" + n, "ret/#", 2), both, "node %s" % n)
        # Replaced on b, then cleared on c [MQTT-3.3.1-10]: every node sees both.
        self.client("b", "pub-b").publish("ret/x", b"newer", qos=1, retain=True, pid=1)
        self.wait_applied(("a", "b", "c"), 3)
        for n in ("a", "c"):
            self.assertEqual(self.retained(n, "sub2-" + n, "ret/x", 1), [("ret/x", b"newer")], "node %s" % n)
        self.client("c", "pub-c").publish("ret/x", b"", qos=1, retain=True, pid=1)
        self.wait_applied(("a", "b", "c"), 4)
        for n in ("a", "b", "c"):
            self.assertEqual(self.retained(n, "sub3-" + n, "ret/#", 1), [("ret/zz", b"marker")],
                             "node %s: ret/x cleared everywhere" % n)
        # A node started now gets what is retained, from the bucket.
        d = Node("d", self.nats.port)
        self.nodes["d"] = d
        d.start()
        self.assertIsNotNone(d.wait_log("in step with bucket", timeout=WAIT), "d never caught up")
        self.assertEqual(self.retained("d", "sub-d", "ret/#", 1), [("ret/zz", b"marker")])

    def v5_client(self, node, client_id, **kw):
        c = RawClient(self.nodes[node].port)
        self.clients.append(c)
        c.send(connect5(client_id, **kw))
        ack = c.expect(CONNACK)
        self.assertEqual(ack.body[1], 0, "CONNACK reason")
        return c, bool(ack.body[0] & 1)

    def test_client_id_taken_over_across_nodes(self):
        # [MQTT-3.1.4-3] a v5 connection at a, taken over from b: DISCONNECT
        # 0x8E, then the close; its persistent session at a ends.
        old5, _ = self.v5_client("a", "twin", clean=False, expiry=3600)
        old311 = self.client("a", "twin311")
        new5, present = self.v5_client("b", "twin")
        self.assertFalse(present, "the session is not carried from a to b (docs/cluster.md)")
        pkt = old5.expect(DISCONNECT, timeout=WAIT)
        self.assertEqual(pkt.body[:1], b"\x8e", "DISCONNECT reason: Session taken over")
        self.assertTrue(old5.wait_closed(), "a closes the taken-over connection")
        # 3.1.1 has no DISCONNECT from the server: the connection just closes.
        self.client("c", "twin311")
        self.assertTrue(old311.wait_closed(timeout=WAIT), "a closes the 3.1.1 connection taken over from c")
        self.assertTrue(new5.is_open())
        self.assertEqual(self.metric("a", "cluster_taken_over_total"), 2)
        # Back at a: its session there ended with the takeover.
        back, present = self.v5_client("a", "twin", clean=False, expiry=3600)
        self.assertFalse(present, "a ended its session of twin when b took the client over")
        new5_closed = new5.wait_closed(timeout=WAIT)
        self.assertTrue(new5_closed, "and b lets go of it in turn")
        self.assertTrue(back.is_open())

    def test_will_of_a_killed_client_on_b_reaches_a_and_c(self):
        subs = {n: self.client(n, "will-sub-" + n) for n in ("a", "c")}
        for n, c in subs.items():
            self.assertEqual(c.subscribe([("will/#", 1)]), [1])
            self.nats.wait_subjects(n, {PREFIX + ".will.>"})
        doomed = RawClient(self.nodes["b"].port)
        self.clients.append(doomed)
        self.assertEqual(doomed.connect("doomed", will=("will/doomed", b"gone", 1, False)), 0)
        doomed.sock.shutdown(socket.SHUT_RDWR)  # no DISCONNECT: the will goes out [MQTT-3.1.2-8]
        doomed.close()
        for n, c in subs.items():
            p = c.recv_publish(timeout=WAIT)
            self.assertEqual((p.topic, p.payload, p.qos), ("will/doomed", b"gone", 1), "node %s" % n)
            c.assert_no_packet(wait=0.3)

    def test_sys_cluster_totals_sum_every_node(self):
        watch = self.client("a", "sys-watch")
        self.assertEqual(watch.subscribe([("$SYS/cluster/#", 0), ("$SYS/broker/clients/connected", 0)]), [0, 0])
        others = [self.client(n, "busy-%s-%d" % (n, i)) for n, i in (("b", 1), ("c", 1), ("c", 2))]
        want = {"$SYS/cluster/nodes": b"3", "$SYS/cluster/clients/connected": b"4",
                "$SYS/broker/clients/connected": b"1"}  # per node: a's own only
        seen = {}
        deadline = time.monotonic() + WAIT
        while any(seen.get(t) != v for t, v in want.items()) and time.monotonic() < deadline:
            try:
                p = watch.recv_publish(timeout=max(0.05, deadline - time.monotonic()))
            except AssertionError:
                break
            seen[p.topic] = p.payload
        self.assertEqual({t: seen.get(t) for t in want}, want)
        self.assertIn("$SYS/cluster/messages/received", seen)
        self.assertEqual(len(others), 3)

    def test_shared_group_spans_nodes_one_delivery_per_message_per_group(self):
        members = [self.client(n, "member-" + n) for n in ("a", "b", "c")]
        for m in members:
            self.assertEqual(m.subscribe([("$share/g/sh/+", 1)]), [1])
        # A second group on the same filter, with one member: it gets all.
        solo = self.client("c", "solo-c")
        self.assertEqual(solo.subscribe([("$share/h/sh/+", 1)]), [1])
        plain = self.client("b", "plain-b")
        self.assertEqual(plain.subscribe([("sh/+", 1)]), [1])
        for n in ("a", "b", "c"):
            self.nats.wait_subjects(n + "-share", {PREFIX + ".sh.*"})
        # a holds the group's queue subscription only; b also its plain filter.
        self.assertEqual((self.metric("a", "cluster_subjects"), self.metric("b", "cluster_subjects")), (1, 2))
        pub = self.client("a", "pub-a")
        count = 30
        for i in range(count):
            pub.publish("sh/%d" % i, b"m%d" % i, qos=1, pid=i + 1)
        want = sorted(b"m%d" % i for i in range(count))
        got = self.collect(members, count)
        payloads = sorted(p for _, _, p in got)
        self.assertEqual(payloads, want, "group g: each message once across the nodes")
        self.assertGreaterEqual(len({i for i, _, _ in got}), 2, "NATS split the group over the nodes")
        self.assertEqual(sorted(p for _, _, p in self.collect([solo], count)), want, "group h: all of them")
        self.assertEqual(sorted(p for _, _, p in self.collect([plain], count)), want)
        for m in members + [solo, plain]:
            m.assert_no_packet(wait=0.3)  # no second copy of any


if __name__ == "__main__":
    main()
