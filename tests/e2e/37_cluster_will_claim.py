#!/usr/bin/python3
# ctest: TIMEOUT 240
"""37 cluster will claim: a v5 client's delayed will is treated the same
when the client comes back at another node of a cluster as when it comes
back at the node it left (issue 16; cluster/presence.h, docs/cluster.md
"Client ids and sessions"). Two Wisp nodes and one nats-server -js on
loopback, and one plain Wisp node for the single-node reference.

The rules (MQTT 5, 3.1.2.5 and 3.1.3.2): the will of a client that left
without DISCONNECT goes out when its Will Delay Interval has passed or its
session ends, whichever is first [MQTT-3.1.2-8]; a new connection to the
session before the delay has passed means it is never sent [MQTT-3.1.3-9].
So, on one node, for client X that left with a 30 s (or 3 s) delay and a
session that outlives it:

- X back with Clean Start 1: its old session ends [MQTT-3.1.2-4], and the
  will goes out then, at once, long before its delay (once);
- X back with Clean Start 0: the session goes on, the will never goes out.

The cluster, X leaving node a and coming back at node b, does the same:
with Clean Start 1 (b's claim ends a's copy: the session's end), with
Clean Start 0 when the session moves to b (handed over), and with Clean
Start 0 when it cannot move (over a's cluster.handover_max_bytes: X gets a
fresh session at b, Session Present 0, and a's copy ends on b's claim; X
came back all the same), also when X was still connected at a (taken over,
DISCONNECT 0x8E).

"Never published" is seen on events, not by sleeping: a sentinel client Y
at a leaves without DISCONNECT after X is back, with a will delay 2 s
longer than X's; the watcher (at a, where X's will would be published)
must get Y's will first. Any will of X, published at once or after its
delay from any node, would come before it.

nats-server must be installed (WISP_NATS_SERVER, found by CMake): a missing
one fails the test, never skips it."""

import os
import struct
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import CONNACK, DISCONNECT, Broker, RawClient, main, mqtt_str, packet  # noqa: E402
from wisp_cluster import load_script  # noqa: E402

cluster24 = load_script("cluster24", "24_cluster.py")
cluster29 = load_script("cluster29", "29_cluster_session.py")
WAIT = cluster24.WAIT
Client = cluster29.Client

LONG_DELAY = 30  # s: a will that arrives within WAIT did not wait for it
SHORT_DELAY = 3  # s: longer than X's way from a to b, short for the sentinel's sake
SENTINEL_DELAY = SHORT_DELAY + 2  # past X's delay, whole-second timers included


def connect5_will(client_id, clean, will_topic, will_payload, delay):
    """A v5 CONNECT, Session Expiry 3600 s, with a QoS 1 will delayed by
    `delay` seconds."""
    props = b"\x11" + struct.pack("!I", 3600)
    will_props = b"\x18" + struct.pack("!I", delay)
    flags = (0x02 if clean else 0) | 0x04 | 0x08
    var = mqtt_str("MQTT") + bytes([5, flags]) + struct.pack("!H", 60) + bytes([len(props)]) + props
    payload = mqtt_str(client_id) + bytes([len(will_props)]) + will_props + mqtt_str(will_topic) + \
        mqtt_str(will_payload)
    return packet(0x10, var + payload)


class WillCases:
    """The scenarios, run on one node (leave and back at the same node) and
    on the cluster (leave at a, back at b). A subclass sets self.nodes,
    self.clients, LEAVE and BACK, and may wait in before_back."""

    LEAVE = BACK = None

    def before_back(self, cid):
        pass

    def watcher(self):
        w = Client(self, self.LEAVE, "watcher", v5=False, clean=True)
        self.assertEqual(w.subscribe([("wc/#", 1)]), [1])
        self.after_subscribe()
        return w

    def after_subscribe(self):
        pass

    def with_will(self, node, cid, delay, clean=True):
        """cid connects at node with a will on wc/<cid> delayed by `delay`."""
        raw = RawClient(self.nodes[node].port, timeout=WAIT)
        self.clients.append(raw)
        raw.send(connect5_will(cid, clean, "wc/" + cid, cid + " is gone", delay))
        ack = raw.expect(CONNACK)
        self.assertEqual(ack.body[1], 0, "CONNACK reason")
        return raw

    def leave_abruptly(self, node, raw, cid):
        raw.close()  # no DISCONNECT: the will is pending, its delay running
        self.assertIsNotNone(self.nodes[node].wait_log("client %s .*disconnected" % cid, timeout=WAIT))

    def back(self, cid, clean, present):
        """cid connects again at BACK (no will now); checks Session Present."""
        self.before_back(cid)
        c = Client(self, self.BACK, cid, v5=True, clean=clean)
        self.assertEqual(c.present, present, "Session Present at %s" % self.BACK)
        return c

    def marker(self, w, topic):
        """Publishes a message from LEAVE; the watcher gets it next."""
        Client(self, self.LEAVE, "marker", v5=False, clean=True).publish(topic, b"marker", 1, 1)
        got, _ = w.receive_all(1)
        self.assertEqual(got[0][:2], (topic, b"marker"), "nothing before the marker")

    def no_will_before_sentinel(self, w, cid):
        """Y leaves LEAVE without DISCONNECT now, its will delayed past X's:
        the watcher's next message is Y's will, nothing of X's before it."""
        y = self.with_will(self.LEAVE, "sentinel-" + cid, SENTINEL_DELAY)
        self.leave_abruptly(self.LEAVE, y, "sentinel-" + cid)
        got, _ = w.receive_all(1, timeout=SENTINEL_DELAY + WAIT)
        self.assertEqual(got[0][0], "wc/sentinel-" + cid,
                         "%s's will was published: it came back before its delay [MQTT-3.1.3-9]" % cid)
        w.raw.assert_no_packet(wait=0.3)

    def check_clean_start_1_publishes_the_will_at_once(self, cid):
        w = self.watcher()
        x = self.with_will(self.LEAVE, cid, LONG_DELAY)
        self.leave_abruptly(self.LEAVE, x, cid)
        self.back(cid, clean=True, present=False)
        # The old session ended with the Clean Start 1 connect [MQTT-3.1.2-4]:
        # its will goes out then, not 30 s later (3.1.3.2, [MQTT-3.1.2-8]).
        got, _ = w.receive_all(1, timeout=WAIT)
        self.assertEqual(got[0][:2], ("wc/" + cid, (cid + " is gone").encode()))
        self.marker(w, "wc/marker")  # and only once

    def check_clean_start_0_does_not_publish_the_will(self, cid):
        w = self.watcher()
        x = self.with_will(self.LEAVE, cid, SHORT_DELAY)
        self.leave_abruptly(self.LEAVE, x, cid)
        self.back(cid, clean=False, present=True)
        self.no_will_before_sentinel(w, cid)

    def test_clean_start_1_publishes_the_will_at_once(self):
        self.check_clean_start_1_publishes_the_will_at_once("x1")

    def test_clean_start_0_does_not_publish_the_will(self):
        self.check_clean_start_0_does_not_publish_the_will("x0")


class SingleNodeTest(WillCases, unittest.TestCase):
    """The reference: one plain node."""

    LEAVE = BACK = "one"

    def setUp(self):
        self.nodes = {"one": Broker()}
        self.clients = []
        self.addCleanup(self.stop)
        self.nodes["one"].start()

    def stop(self):
        for c in self.clients:
            c.close()
        try:
            self.nodes["one"].stop()
        finally:
            self.nodes["one"].cleanup()


class ClusterWillClaimTest(WillCases, cluster29.ClusterSessionTest):
    """nats-server and two nodes (ClusterCase's setUp); a moves no session
    over 64 KiB."""

    # 24's and 29's own tests are theirs: not run again here. Their
    # helpers (metric, wait_metric, heard_claim) are used.
    for _name in [n for n in dir(cluster29.ClusterSessionTest) if n.startswith("test_")]:
        locals()[_name] = None
    del _name

    LEAVE, BACK = "a", "b"
    node_names = ("a", "b")

    def make_node(self, name, persistence=None):
        n = super().make_node(name, persistence)
        if name == "a":
            n.extra_config["cluster"]["handover_max_bytes"] = 65536
        return n

    def after_subscribe(self):
        # What b publishes reaches the watcher at a (a will of X published there).
        self.nats.wait_subjects("a", {cluster24.PREFIX + ".wc.>"})

    def before_back(self, cid):
        self.heard_claim("b", cid, "a")  # b asks a for the session (Clean Start 0)

    def big_session(self, cid, delay, leave):
        """cid at a with a will and a QoS 1 subscription holding ~100 KB of
        unacknowledged messages (over a's cluster.handover_max_bytes);
        leaves without DISCONNECT if `leave`. Returns its connection."""
        x = self.with_will("a", cid, delay, clean=True)
        x.send(cluster29.subscribe5(1, [(cid + "/q/#", 1)]))
        x.expect(9)
        pub = Client(self, "a", cid + "-pub", v5=False, clean=True)
        for i in range(100):
            pub.publish(cid + "/q/t", b"x" * 1000, 1, 1 + i)  # PUBACK: in cid's session
        if leave:
            self.leave_abruptly("a", x, cid)
        return x

    def test_clean_start_0_session_too_big_to_move(self):
        # The session cannot move: X starts afresh at b (logged), a's copy
        # ends on b's claim, and the will is not published: X came back
        # within its delay with Clean Start 0, as on one node.
        w = self.watcher()
        self.big_session("big", SHORT_DELAY, leave=True)
        self.back("big", clean=False, present=False)
        self.assertIsNotNone(self.nodes["b"].wait_log("big: its session at node 'a' could not be fetched "
                                                      r"\(over cluster.handover_max_bytes\)", timeout=WAIT))
        self.wait_metric("a", "cluster_taken_over_total", 1)  # a's copy ended on the claim
        self.no_will_before_sentinel(w, "big")

    def test_clean_start_0_takeover_of_a_session_too_big_to_move(self):
        # X still connected at a: taken over (0x8E), its will pending with
        # its delay as on one node, and not published once X is at b.
        w = self.watcher()
        x = self.big_session("live", SHORT_DELAY, leave=False)
        self.back("live", clean=False, present=False)
        while True:  # the unacknowledged messages, then DISCONNECT 0x8E
            pkt = x.recv_packet(WAIT)
            if pkt.type == DISCONNECT:
                break
        self.assertEqual(pkt.body[:1], b"\x8e", "DISCONNECT reason: Session taken over [MQTT-3.1.4-3]")
        self.wait_metric("a", "cluster_taken_over_total", 1)
        self.no_will_before_sentinel(w, "live")


if __name__ == "__main__":
    main()
