#!/usr/bin/python3
# ctest: TIMEOUT 180
"""42 cluster too large: a message whose NATS form is over nats-server's
max_payload cannot cross nodes (issue 16). It is delivered on its own node
as on a single node, acknowledged so, counted in
$SYS/broker/cluster/messages/too_large and logged once; it holds nobody
else up.
  - nats-server with a 64 KiB max_payload: QoS 0, 1 and 2 messages of
    70000 bytes published at a, with a subscriber at a and one at b: a's
    gets them, b's does not, the publisher gets its PUBACK and PUBCOMP, the
    counter says 3, the log says so once (and said at connect which
    messages will not cross); a small QoS 1 and QoS 0 message right after
    cross. Before, the QoS 1 PUBACK never came: the JetStream worker
    re-sent the refused message every 5 s for ever, holding its ack.
  - a 100000-byte QoS 1 message kept in a's forwarding queue while NATS
    is down (its max_payload then 1 MiB), and a small one after it;
    nats-server back with a 64 KiB max_payload: the big one is given up
    (counted, logged), the small one crosses and the queue drains. Before,
    the big one was re-sent for ever and blocked the queue's drain.
nats-server must be installed (WISP_NATS_SERVER): a missing one fails the
test, never skips it."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import main  # noqa: E402
from wisp_cluster import WAIT, ClusterCase, InterestNode  # noqa: E402

SMALL = 64 * 1024  # nats-server's max_payload in these tests
BIG = 70000        # over it, with the headers or without


class TooLargeTest(ClusterCase):
    node_class = InterestNode
    node_names = ("a", "b")
    persistent = ("a",)  # the forwarding queue needs a's store
    settle = True
    first_max_payload = {"test_too_large_stays_on_its_node": SMALL}

    def start_nats(self, nats):
        nats.max_payload = self.first_max_payload.get(self._testMethodName)
        return super().start_nats(nats)

    def metric(self, node, name):
        m = re.search(r"(?m)^wisp_%s ([0-9]+)$" % name, self.nodes[node].get("/metrics")[1])
        self.assertIsNotNone(m, "no wisp_%s on node %s" % (name, node))
        return int(m.group(1))

    def log_count(self, node, text):
        return sum(1 for line in self.nodes[node].log().splitlines() if text in line)

    def subscribers(self, filt, qos):
        subs = {}
        for node in ("a", "b"):
            subs[node] = self.client(node, "sub-" + node)
            self.assertEqual(subs[node].subscribe([(filt, qos)]), [qos])
        return subs["a"], subs["b"]

    def test_too_large_stays_on_its_node(self):
        a = self.nodes["a"]
        self.assertEqual(self.log_count("a", "NATS's max_payload (65536 bytes) is below what limits.max_packet_size"),
                         1, a.log_banner())
        sub_a, sub_b = self.subscribers("big/#", 2)
        pub = self.client("a", "pub")
        for qos in (0, 1, 2):
            # RawClient.publish waits for PUBACK, or PUBREC then PUBCOMP.
            pub.publish("big/%d" % qos, b"x" * BIG, qos=qos, pid=qos + 1)
        got = [sub_a.recv_publish(timeout=WAIT) for _ in range(3)]
        self.assertEqual([(p.topic, len(p.payload)) for p in got], [("big/%d" % q, BIG) for q in (0, 1, 2)])
        # No stall: small messages right after cross, and are the first b
        # gets (each path keeps its order: the big ones did not cross).
        pub.publish("big/small1", b"s1", qos=1, pid=7)
        pub.publish("big/small0", b"s0", qos=0)
        got = {sub_b.recv_publish(timeout=WAIT).topic for _ in range(2)}
        self.assertEqual(got, {"big/small0", "big/small1"})
        self.assertEqual(self.metric("a", "cluster_too_large_total"), 3)
        self.assertEqual(self.log_count("a", "is over NATS's max_payload (65536 bytes)"), 1, a.log_banner())
        self.assertEqual(self.metric("a", "cluster_pending"), 0)

    def test_queued_while_nats_down_too_large_when_back_does_not_block(self):
        a = self.nodes["a"]
        sub_a, sub_b = self.subscribers("q/#", 1)
        pub = self.client("a", "pub")
        pub.publish("q/first", b"1", qos=1)
        self.assertEqual(sub_b.recv_publish(timeout=WAIT).topic, "q/first")
        self.assertEqual(sub_a.recv_publish(timeout=WAIT).topic, "q/first")
        offset = a.log_size()
        self.nats.kill()
        self.assertIsNotNone(a.wait_log("JetStream out of reach: QoS 1/2 messages for other nodes are kept in "
                                        "the store", offset=offset, timeout=WAIT), a.log_banner())
        # Under the 1 MiB NATS had: kept in the store and acknowledged.
        pub.publish("q/big", b"x" * 100000, qos=1, pid=2)
        pub.publish("q/after", b"after", qos=1, pid=3)
        self.assertEqual([sub_a.recv_publish(timeout=WAIT).topic for _ in range(2)], ["q/big", "q/after"])
        self.nats.max_payload = SMALL
        self.nats.start()
        self.assertIsNotNone(a.wait_log("forwarding queue drained: every QoS 1/2 message kept while JetStream was "
                                        "out of reach is in stream 'WISP', but 1 given up as over NATS's "
                                        "max_payload", offset=offset, timeout=WAIT), a.log_banner())
        self.assertEqual(sub_b.recv_publish(timeout=WAIT).topic, "q/after")
        self.assertEqual(self.metric("a", "cluster_too_large_total"), 1)
        self.assertEqual(self.metric("a", "cluster_forward_queued"), 0)
        self.assertEqual(self.log_count("a", "is over NATS's max_payload (65536 bytes): dropped from the stream"), 1,
                         a.log_banner())


if __name__ == "__main__":
    main()
