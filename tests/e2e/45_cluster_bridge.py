#!/usr/bin/env python3
# ctest: TIMEOUT 180
"""A bridge in a cluster (docs/cluster.md "Bridges"): run on one node, it
serves the whole cluster, each message crossing it once either way; the
same bridge configured on two nodes is seen by both (their interest beats
list their bridges), warned about once each and counted in
$SYS/broker/cluster/bridges/duplicated until the other node stops.

Needs nats-server and mosquitto (27_bridge.py's Remote)."""

import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import RawClient, main  # noqa: E402
from wisp_cluster import WAIT, ClusterCase, InterestNode, load_script  # noqa: E402

b27 = load_script("b27_bridge", "27_bridge.py")
b34 = load_script("b34_interest_bounds", "34_cluster_interest_bounds.py")  # RawNats, SUBJECT

DUPLICATED = "bridge 'up' also runs on node '%s': each message crosses it once per node"


class BridgeNode(InterestNode):
    """A node beating every second with bridge "up" to remote_port: out
    sensors/#, in cmd/#, QoS 1."""

    remote_port = None

    def config(self):
        cfg = super().config()
        cfg["bridges"] = [{
            "name": "up", "addresses": ["127.0.0.1:%d" % self.remote_port], "protocol_version": "mqttv311",
            "client_id": "gw-" + cfg["cluster"]["node"], "keepalive": 10, "reconnect_min": 1, "reconnect_max": 2,
            "topics": [{"pattern": "sensors/#", "direction": "out", "qos": 1},
                       {"pattern": "cmd/#", "direction": "in", "qos": 1}]}]
        return cfg


class ClusterBridge(ClusterCase):
    settle = True

    @classmethod
    def setUpClass(cls):
        cls.remote = b27.Remote()
        cls.remote.start()
        BridgeNode.remote_port = cls.remote.port

    @classmethod
    def tearDownClass(cls):
        cls.remote.cleanup()

    def start(self, name, bridged):
        self.nodes[name] = (BridgeNode if bridged else InterestNode)(name, self.nats.port)
        node = self.start_node(name)
        if bridged:
            self.assertIsNotNone(node.wait_log(r"bridge up: connected to", timeout=WAIT))
        return node

    def remote_client(self, client_id):
        c = RawClient(self.remote.port)
        self.clients.append(c)
        self.assertEqual(c.connect(client_id), 0)
        return c

    def gauge(self, node):
        m = re.search(r"(?m)^wisp_cluster_bridges_duplicated ([0-9]+)$", self.nodes[node].get("/metrics")[1])
        return int(m.group(1)) if m else None

    def wait_gauge(self, node, want):
        deadline = time.monotonic() + WAIT
        while self.gauge(node) != want and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(self.gauge(node), want, "node %s: $SYS/broker/cluster/bridges/duplicated" % node)

    def wait_beats(self, count):
        """Reads the interest subject until each of a and b beat count
        times, each beat listing bridge "up" (Wisp-Bridges)."""
        nc = b34.RawNats(self.nats.port)
        self.addCleanup(nc.close)
        nc.sub(b34.SUBJECT, 1)
        nc.flush()
        beats = {"a": 0, "b": 0}
        for _ in range(1000):
            if min(beats.values()) >= count:
                return
            _, msg = nc.next_msg()
            headers = dict(line.split(": ", 1) for line in msg.decode().split("\r\n")[1:] if ": " in line)
            if headers.get("Wisp-Interest") == "beat" and headers.get("Wisp-Node") in beats:
                self.assertEqual(headers.get("Wisp-Bridges"), "/up/")
                beats[headers["Wisp-Node"]] += 1
        self.fail("beats seen: %s" % beats)

    def test_bridge_on_one_node_serves_the_cluster_once(self):
        self.start("a", bridged=True)
        self.start("b", bridged=False)
        far = self.remote_client("far")
        far.subscribe([("sensors/#", 1)])
        loc = self.client("b", "loc")
        loc.subscribe([("cmd/#", 1)])

        # Published at b: a's bridge carries it once; the second message
        # coming next says no copy of the first came between.
        pub = self.client("b", "pub")
        pub.publish("sensors/t", b"s1", qos=1, pid=1)
        pub.publish("sensors/t", b"s2", qos=1, pid=2)
        self.expect_payloads(far, [("sensors/t", b"s1"), ("sensors/t", b"s2")])

        # Published at the remote: in through a's bridge, across to b once.
        farpub = self.remote_client("farpub")
        farpub.publish("cmd/go", b"c1", qos=1, pid=1)
        farpub.publish("cmd/go", b"c2", qos=1, pid=2)
        self.expect_payloads(loc, [("cmd/go", b"c1"), ("cmd/go", b"c2")])
        self.assertEqual(self.gauge("a"), 0)
        self.assertEqual(self.gauge("b"), 0)

    def test_same_bridge_on_two_nodes_is_warned_and_counted(self):
        a = self.start("a", bridged=True)
        b = self.start("b", bridged=True)
        self.assertIsNotNone(a.wait_log(DUPLICATED % "b", timeout=WAIT), "a never warned about b's bridge")
        self.assertIsNotNone(b.wait_log(DUPLICATED % "a", timeout=WAIT), "b never warned about a's bridge")
        self.wait_gauge("a", 1)
        self.wait_gauge("b", 1)
        self.wait_beats(3)  # more beats listing "up": no second warning
        self.assertEqual(self.gauge("a"), 1)

        b.stop()  # SIGTERM: its "bye" ends the episode at a
        self.assertIsNotNone(a.wait_log(r"bridge 'up' no longer runs on node 'b'", timeout=WAIT))
        self.wait_gauge("a", 0)
        # Each node warned once for the episode, beats after beats.
        self.assertEqual(a.log().count(DUPLICATED % "b"), 1)
        self.assertEqual(b.log().count(DUPLICATED % "a"), 1)


if __name__ == "__main__":
    main()
