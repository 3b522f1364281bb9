#!/usr/bin/env python3
# ctest: TIMEOUT 240
"""Retained writes reach the cluster's bucket at least once (issue 16,
docs/cluster.md "Retained messages"): a node publishes each retained set
or deletion to the JetStream bucket with an acknowledgement, retried until
JetStream has it, and with persistence its "not yet in the bucket" mark
survives kill -9, so the bucket's older record never replaces it.

Two nodes, a (with its store) and b; nats-server is killed and started
again on its store (the bucket survives), node a is killed with SIGKILL
after its publisher's PUBACK:
- the probe's case: a retained message acknowledged at a while NATS was
  down reaches b after NATS and a are back;
- the topic had an older value in the bucket: after a's restart both nodes
  have the new one (a's own store does not step back to the older);
- a deletion (empty payload) made while NATS was down reaches b;
- $SYS/broker/cluster/retained/unsent (here through /metrics, the same
  figure) counts the writes waiting while NATS is down, is logged once, and
  is 0 once they are in the bucket;
- the marks of writes still unsent survive a compaction of a's store (they
  are written into the snapshot) and a's kill -9;
- nats-server loses its last writes (the bucket's message files removed
  while it is down, its consumers' state kept): b, whose consumer is then
  ahead of the bucket's stream, follows it anew and gets the retained
  message a publishes after NATS is back."""

import glob
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_cluster import WAIT, ClusterCase  # noqa: E402
from wisp_e2e import PINGREQ_PKT, PINGRESP, PUBLISH, SUBACK, main, subscribe_pkt  # noqa: E402

IN_STEP = "retained messages in step"


class RetainedOutbox(ClusterCase):
    node_names = ("a", "b")
    persistent = ("a",)

    def make_node(self, name, persistence=None):
        n = super().make_node(name, persistence)
        if name == "a":  # compacts after a few kilobytes: test 5 writes the marks into a snapshot
            n.extra_config["persistence"] = {"compact_min_size": 4096}
        return n

    def setUp(self):
        super().setUp()
        for name in self.node_names:
            self.assertIsNotNone(self.nodes[name].wait_log(IN_STEP, timeout=WAIT),
                                 "node %s never followed the bucket" % name)

    # ---- helpers ----

    def retained_at(self, node, topic):
        """The retained payload a new subscriber at node gets for topic, or
        None: a PINGRESP asked for after the SUBACK comes after any retained message
        (sent with RETAIN 1 [MQTT-3.3.1-8]; a live copy, RETAIN 0, may come
        too: the QoS 1 message forwarded to the other nodes)."""
        c = self.client(node, "probe-%s-%d" % (node, time.monotonic_ns()))
        c.send(subscribe_pkt(1, [(topic, 0)]))
        got = None
        for until in (SUBACK, PINGRESP):
            for _ in range(100):
                pkt = c.recv_packet(WAIT)
                if pkt.type == until:
                    break
                if pkt.type == PUBLISH and pkt.retain:
                    got = pkt.payload
            if until == SUBACK:
                c.send(PINGREQ_PKT)
        c.close()
        self.clients.remove(c)
        return got

    def wait_retained(self, node, topic, want):
        deadline = time.monotonic() + 3 * WAIT
        got = None
        while time.monotonic() < deadline:
            got = self.retained_at(node, topic)
            if got == want:
                return
            time.sleep(0.1)
        self.fail("node %s: retained on %s is %r, wanted %r" % (node, topic, got, want))

    def publish_retained(self, node, topic, payload):
        c = self.client(node, "pub-%d" % time.monotonic_ns())
        c.publish(topic, payload, qos=1, retain=True, pid=1)  # returns after the PUBACK
        c.close()
        self.clients.remove(c)

    def unsent(self, node):
        status, body = self.nodes[node].get("/metrics")
        self.assertEqual(status, 200)
        for line in body.splitlines():
            if line.startswith("wisp_cluster_retained_unsent "):
                return int(float(line.split()[1]))
        self.fail("no cluster_retained_unsent in /metrics")

    def wait_unsent(self, node, want):
        deadline = time.monotonic() + 3 * WAIT
        got = None
        while time.monotonic() < deadline:
            got = self.unsent(node)
            if got == want:
                return
            time.sleep(0.1)
        self.fail("node %s: %s retained writes unsent, wanted %s" % (node, got, want))

    def kill_a(self):
        a = self.nodes["a"]
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(timeout=10)
        a.exit_status = "killed"

    def restart_a(self):
        a = self.nodes["a"]
        a.exit_status = None
        off = a.log_size()
        self.start_node("a", offset=off)
        self.assertIsNotNone(a.wait_log(IN_STEP, offset=off, timeout=3 * WAIT), "a never followed the bucket again")

    # ---- tests ----

    def test_1_acknowledged_while_nats_down_reaches_b_across_kill(self):
        self.nats.kill()
        self.publish_retained("a", "ret/one", b"kept")
        self.kill_a()
        self.nats.start()
        self.restart_a()
        self.wait_retained("b", "ret/one", b"kept")
        self.assertEqual(self.retained_at("a", "ret/one"), b"kept")

    def test_2_older_bucket_value_does_not_replace_the_new_one(self):
        self.publish_retained("a", "ret/two", b"old")
        self.wait_retained("b", "ret/two", b"old")
        self.nats.kill()
        self.publish_retained("a", "ret/two", b"new")
        self.kill_a()
        self.nats.start()
        self.restart_a()
        # a read the whole bucket (the older record among it) and kept its own.
        self.assertEqual(self.retained_at("a", "ret/two"), b"new")
        self.wait_retained("b", "ret/two", b"new")
        self.assertEqual(self.retained_at("a", "ret/two"), b"new")

    def test_3_deletion_while_nats_down_reaches_b(self):
        self.publish_retained("a", "ret/three", b"old")
        self.wait_retained("b", "ret/three", b"old")
        self.nats.kill()
        self.publish_retained("a", "ret/three", b"")  # clears it [MQTT-3.3.1-10]
        self.kill_a()
        self.nats.start()
        self.restart_a()
        self.wait_retained("b", "ret/three", None)
        self.assertIsNone(self.retained_at("a", "ret/three"))

    def test_4_unsent_gauge_counts_and_returns_to_zero(self):
        a = self.nodes["a"]
        self.assertEqual(self.unsent("a"), 0)
        off = a.log_size()
        self.nats.kill()
        for i in range(3):
            self.publish_retained("a", "ret/four/%d" % i, b"v%d" % i)
        self.wait_unsent("a", 3)
        self.assertIsNotNone(a.wait_log("retained messages wait for the bucket: ", offset=off, timeout=WAIT))
        self.nats.start()
        self.wait_unsent("a", 0)
        for i in range(3):
            self.wait_retained("b", "ret/four/%d" % i, b"v%d" % i)
        self.assertIsNotNone(a.wait_log("retained messages all in bucket", offset=off, timeout=WAIT))
        self.assertEqual(a.log_since(off).count("retained messages wait for the bucket: "), 1)

    def test_5_marks_survive_a_compaction(self):
        a = self.nodes["a"]
        data = os.path.join(a.dir, "wisp-data")
        logs = set(glob.glob(os.path.join(data, "log.*")))

        def compacted():  # a snapshot in place and the logs before it gone
            return glob.glob(os.path.join(data, "snap.*[0-9]")) and not logs & set(glob.glob(os.path.join(data, "log.*")))
        self.nats.kill()
        pad = b"x" * 300
        for rnd in range(40):
            for i in range(3):
                self.publish_retained("a", "ret/five/%d" % i, b"%d-%d-" % (rnd, i) + pad)
            if glob.glob(os.path.join(data, "snap.*")):
                break
        deadline = time.monotonic() + WAIT
        while not compacted() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(compacted(), "a never compacted its store: %s" % os.listdir(data))
        self.publish_retained("a", "ret/five/0", b"last")  # a mark after the snapshot, in the new log
        self.kill_a()
        self.nats.start()
        self.restart_a()
        self.wait_retained("b", "ret/five/0", b"last")
        for i in (1, 2):
            self.wait_retained("b", "ret/five/%d" % i, b"%d-%d-" % (rnd, i) + pad)
        self.wait_unsent("a", 0)

    def test_6_new_writes_after_nats_lost_its_last_writes_reach_b(self):
        self.publish_retained("a", "ret/six", b"before")
        self.wait_retained("b", "ret/six", b"before")
        b = self.nodes["b"]
        off = b.log_size()
        self.nats.restart_losing_last_writes("KV_wisp_retained")
        self.assertIsNotNone(b.wait_log("bucket 'wisp_retained': this node's consumer of it was past the end",
                                        offset=off, timeout=WAIT), b.log_banner())
        self.publish_retained("a", "ret/six/after", b"after")
        self.wait_retained("b", "ret/six/after", b"after")


if __name__ == "__main__":
    main()
