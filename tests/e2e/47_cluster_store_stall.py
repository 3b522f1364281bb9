#!/usr/bin/python3
# ctest: TIMEOUT 240
"""47 cluster store stall: a stream message routed into a persistent
session is acknowledged to JetStream only once the receiving node's store
holds the copy, its redeliveries too (issue 16: "Killing any one node with
kill -9 loses no acknowledged message for subscribers on the other
nodes"; the node's own acks wait for its store, session/observer.h).

Node b (with its store) holds the persistent session "keep" on st/#; its
store stops writing (the debug build's WISP_DEBUG_HOLD_STORE_WRITES, as a
disk that stalls); a QoS 1 message published at a reaches b's stream
consumer and keep's queue in memory only, so b holds its ack. JetStream
delivers it again after the consumer's ack wait (cluster.ack_wait, 12 s
here). b is killed (kill -9) and started again with its store writing:
keep gets the message.
Before, b acked the redelivery at once, JetStream forgot the message, and
keep never got it.

After the restart and before that redelivery, a publishes more messages
than b's dedupe window once spanned (4 x cluster.inbound_queue stream
sequences, with inbound_queue 16): b routes them to keep, and the message
still pending at JetStream (its routing was never stored) stays new to b.
Before, the window's floor followed the newest sequence at its span
below, passed the pending message, and took its redelivery for one routed
before: acked, never routed (keep got only the others).

Last, b is started again with another cluster.ack_wait: its existing
consumer takes it (JetStream's consumer info says so). Before, the ack wait
was a constant and a changed inbound_queue never reached the consumer's
MaxAckPending.

nats-server must be installed (WISP_NATS_SERVER): a missing one fails the
test, never skips it."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_cluster import ClusterCase, InterestNode  # noqa: E402
from wisp_e2e import RawClient, main  # noqa: E402

WAIT = 20.0        # seconds an awaited cluster event may take (JetStream set-up included)
ACK_WAIT = 12      # cluster.ack_wait: the messages passing "kept" go out before its next redelivery
ACK_WAIT_CHANGED = 20  # b's last start
ACK_SETTLE = 2.0   # seconds an ack b must not send is watched for
INBOUND = 16       # cluster.inbound_queue: the node consumer's MaxAckPending
PASS = 4 * INBOUND + 36  # messages past the pending one: more than the old span (4 x INBOUND)
AGAIN = "stream messages delivered again were routed before"
STREAM = "WISP"


class SmallQueueNode(InterestNode):
    def config(self):
        cfg = super().config()
        cfg["cluster"]["inbound_queue"] = INBOUND
        cfg["cluster"]["ack_wait"] = self.ack_wait
        return cfg

    ack_wait = ACK_WAIT


class StoreStallTest(ClusterCase):
    node_class = SmallQueueNode
    node_names = ("a", "b")
    persistent = ("b",)
    settle = True
    wait = WAIT

    def setUp(self):
        # Both nodes look for the file; only b has a store to hold.
        self.hold = os.path.join(os.environ.get("TMPDIR", "/tmp"), "wisp-e2e47-hold-%d" % os.getpid())
        self.addCleanup(lambda: os.path.exists(self.hold) and os.remove(self.hold))
        os.environ["WISP_DEBUG_HOLD_STORE_WRITES"] = self.hold
        try:
            super().setUp()
        finally:
            del os.environ["WISP_DEBUG_HOLD_STORE_WRITES"]

    def raw(self, node, client_id, clean=False):
        c = RawClient(self.nodes[node].port)
        self.clients.append(c)
        self.assertEqual(c.connect(client_id, clean=clean), 0)
        return c

    def test_redelivery_is_not_acked_before_the_store_holds_the_copy(self):
        keep = self.raw("b", "keep")
        self.assertEqual(keep.subscribe([("st/#", 1)]), [1])  # the SUBACK waits for a's answer
        keep.close()
        b = self.nodes["b"]
        self.assertIsNotNone(b.wait_log("client keep .*disconnected", timeout=WAIT))
        # A round trip on b after that: the loop turn that ended keep's
        # connection has written its store (each turn ends with a write).
        sync = self.raw("b", "sync", clean=True)
        sync.ping()
        sync.close()
        offset = b.log_size()
        with open(self.hold, "w"):
            pass
        pub = self.raw("a", "pub", clean=True)
        pub.publish("st/x", b"kept", qos=1)  # acknowledged: JetStream has it
        pub.close()
        self.assertIsNotNone(b.wait_log(AGAIN, offset=offset, timeout=ACK_WAIT + WAIT),
                             "JetStream never delivered the message to b again")
        # b must not have acked it: JetStream still counts it pending for
        # b. (The ack of the redelivery went out within milliseconds
        # before; watched for a bounded while, as any absence is.)
        deadline = time.monotonic() + ACK_SETTLE
        while time.monotonic() < deadline:
            pending = (self.nats.consumer(STREAM, "b") or {}).get("num_ack_pending")
            self.assertEqual(pending, 1, "JetStream was told the message is safe at b: its store never wrote it")
            time.sleep(0.05)
        b.proc.kill()
        b.proc.wait(timeout=10)
        os.remove(self.hold)
        b.exit_status = None  # the new process's exit is checked at stop
        self.start_node("b", offset=b.log_size())
        back = self.raw("b", "keep")
        self.assertTrue(back.session_present, "keep's session was written before the stall [MQTT-3.2.2-2]")
        # While "kept" waits for its ack wait at JetStream, more messages
        # than the old window's span pass it.
        pub = self.raw("a", "pub2", clean=True)
        for i in range(PASS):
            pub.publish("st/x", b"n%d" % i, qos=1, pid=i % 65535 + 1)
        pub.close()
        # JetStream delivers it again once its ack wait since the last
        # delivery is over.
        want = {b"n%d" % i for i in range(PASS)} | {b"kept"}
        got = set()
        deadline = time.monotonic() + ACK_WAIT + WAIT
        while got != want and time.monotonic() < deadline:
            try:
                p = back.recv_publish(timeout=max(0.1, deadline - time.monotonic()))
            except AssertionError as e:
                if "got nothing" not in str(e):
                    raise
                break
            self.assertEqual(p.topic, "st/x")
            got.add(p.payload)
        self.assertEqual(want - got, set(), "acknowledged messages never reached keep's session at b")
        self.assertEqual(got - want, set())

        # A changed cluster.ack_wait reaches b's existing consumer.
        back.close()
        b.stop()
        b.exit_status = None
        b.ack_wait = ACK_WAIT_CHANGED
        offset = b.log_size()
        self.start_node("b", offset=offset)
        self.assertIsNotNone(b.wait_log("consumer 'b' on stream 'WISP' now has cluster.ack_wait %d s"
                                        % ACK_WAIT_CHANGED, offset=offset, timeout=WAIT))
        config = (self.nats.consumer(STREAM, "b") or {}).get("config") or {}
        self.assertEqual((config.get("ack_wait"), config.get("max_ack_pending")),
                         (ACK_WAIT_CHANGED * 10**9, INBOUND), "b's consumer kept its old ack wait")


if __name__ == "__main__":
    main()
