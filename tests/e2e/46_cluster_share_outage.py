#!/usr/bin/python3
# ctest: TIMEOUT 180
"""46 cluster share outage: a shared group gets a QoS 0 message at most
once when its publisher's node had lost NATS (issue 16). Two Wisp nodes
and one nats-server on loopback; node a reaches nats-server through a TCP
relay the test can cut, so a alone loses NATS while b keeps it.

While NATS is away a node serves its own members of a shared group
itself, at once. Its message also waits in cnats's reconnect buffer and
goes to NATS when a is back; NATS then gave it to the group again,
through a queue subscription (b's, or a's own): the group got it twice.
Now a marks such a copy as one whose groups it served (Wisp-Groups-Served)
and no node gives it to a group. What a user sees: the member on a gets
each message once, the member on b none of them; messages published once
a is back reach the group once each, on either node.

nats-server must be installed (WISP_NATS_SERVER): a missing one fails the
test, never skips it."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import main  # noqa: E402
from wisp_cluster import ClusterCase, InterestNode, Relay  # noqa: E402

WAIT = 20.0  # seconds any awaited cluster event may take


class ShareOutageTest(ClusterCase):
    node_class = InterestNode
    node_names = ("a", "b")
    settle = True
    wait = WAIT

    def make_node(self, name, persistence=None):
        port = self.nats.port
        if name == "a":
            self.relay = Relay(self.nats.port)
            self.addCleanup(self.relay.close)
            port = self.relay.port
        return self.node_class(name, port, persistence=bool(persistence))

    def collect(self, clients, done):
        """Reads the PUBLISHes reaching clients (name -> client) until
        done(payloads per name) or WAIT passed; returns what came."""
        got = {name: [] for name in clients}
        deadline = time.monotonic() + WAIT
        while not done(got) and time.monotonic() < deadline:
            for name, c in clients.items():
                try:
                    got[name].append(c.recv_publish(timeout=0.05).payload)
                except AssertionError:  # nothing within 50 ms
                    pass
        return got

    def test_group_gets_messages_of_a_node_without_nats_once(self):
        a = self.nodes["a"]
        ma = self.client("a", "member-a")
        mb = self.client("b", "member-b")
        # Each SUBACK waits for its queue subscription to be in place.
        self.assertEqual(ma.subscribe([("$share/g/so/x", 0)]), [0])
        self.assertEqual(mb.subscribe([("$share/g/so/x", 0)]), [0])
        pub = self.client("a", "pub")

        offset = a.log_size()
        self.relay.cut()
        self.assertIsNotNone(a.wait_log("lost the NATS connection: serving local clients", offset=offset,
                                        timeout=WAIT))
        self.assertIsNotNone(a.wait_log("lost the NATS connection 'a-share'", offset=offset, timeout=WAIT))
        during = [b"during-%d" % i for i in range(5)]
        for p in during:
            pub.publish("so/x", p)
        # Served on a at once: its only member there.
        self.assertEqual([ma.recv_publish(timeout=WAIT).payload for _ in during], during)

        offset = a.log_size()
        self.relay.restore()
        self.assertIsNotNone(a.wait_log("connected to NATS as node 'a'", offset=offset, timeout=WAIT))
        self.assertIsNotNone(a.wait_log("the NATS connection 'a-share' is back", offset=offset, timeout=WAIT))
        # cnats sends what it buffered first, then these, on the same
        # connection: NATS gives each marker to one member, at random. Once
        # every marker came, and one reached b, each member's node has had
        # every copy NATS gave it before (one connection, in order).
        markers = [b"after-%d" % i for i in range(20)]
        for p in markers:
            pub.publish("so/x", p)

        def all_markers(got):
            seen = [p for ps in got.values() for p in ps if p.startswith(b"after-")]
            return len(seen) >= len(markers) and any(p.startswith(b"after-") for p in got["b"])

        got = self.collect({"a": ma, "b": mb}, all_markers)
        self.assertTrue(any(p.startswith(b"after-") for p in got["b"]),
                        "no marker reached b's member (NATS picks at random): %r" % got)
        self.assertEqual(sorted(p for ps in got.values() for p in ps if p.startswith(b"after-")), sorted(markers),
                         "each marker once, to one member")
        # The group had the messages published during the outage, on a:
        # none again, on either node.
        self.assertEqual([p for p in got["a"] if p.startswith(b"during-")], [], got)
        self.assertEqual([p for p in got["b"] if p.startswith(b"during-")], [], got)


if __name__ == "__main__":
    main()
