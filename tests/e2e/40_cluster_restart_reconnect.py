#!/usr/bin/python3
# ctest: TIMEOUT 240
"""40 cluster restart reconnect: a client that reconnects at a restarted
node before that node heard the other nodes' answers to its start-up
request does not resume the stale copy restored from the store (issue 16;
cluster/handover.h, docs/cluster.md "Client ids and sessions"). Two Wisp
nodes with their stores and one nats-server -js on loopback.

X (3.1.1 and v5) holds a persistent session at a, subscribed to X/old; a is
killed (kill -9); X connects at b (Session Present 0: a is gone),
subscribes X/new and leaves; a QoS 1 message on X/new is queued for it at
b. a restarts, and X reconnects there the moment a's port accepts, before
a heard b's answer: its CONNECT waits for the answers, then gets b's
session (Session Present 1, handed over), the message queued at b, and
none of X/old's messages. Without the wait it resumed a's stale copy,
whose claim ended b's: the queued message and X/new were lost to it.

In the same restart: a session nobody claimed meanwhile waits too and
resumes a's restored copy (Session Present 1, its subscription); a Clean
Start 1 connect of a restored id and a connect of an id a never held do
not wait.

nats-server must be installed (WISP_NATS_SERVER, found by CMake): a missing
one fails the test, never skips it."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import CONNACK, RawClient, connect_pkt, main  # noqa: E402
from wisp_cluster import WAIT, ClusterCase, Node, load_script  # noqa: E402

cluster29 = load_script("cluster29", "29_cluster_session.py")
Client = cluster29.Client
connect5 = cluster29.connect5

HELD = "client %s: its session restored here waits for the other nodes' answers at start"
ENDED = "client %s: node 'b' holds its session from a later connect"


class QuickNode(Node):
    """A node beating every second, so that its SUBACKs wait less after it
    (re)connects (interest.h); a restored session's CONNECT waits at start
    3 s at most (the least the wait lasts, for the second start-up request's
    answers: cluster/handover.h). With hold_request
    set (a path), its start-up request goes out only once that file exists
    (the debug build's WISP_DEBUG_HOLD_START_REQUEST): the answers come
    after the test's CONNECTs, as when NATS is not there yet or within
    the round trip after it is, a window otherwise a few ms wide."""

    hold_request = None
    hold_dir_sub = None  # a path: WISP_DEBUG_HOLD_DIR_SUB, the others' requests unheard until it exists

    def config(self):
        cfg = super().config()
        cfg["cluster"]["interest_interval"] = 1
        return cfg

    def _env(self):
        env = super()._env()
        if self.hold_request:
            env["WISP_DEBUG_HOLD_START_REQUEST"] = self.hold_request
        if self.hold_dir_sub:
            env["WISP_DEBUG_HOLD_DIR_SUB"] = self.hold_dir_sub
        return env


class RestartReconnectTest(ClusterCase):
    node_class = QuickNode
    node_names = ("a", "b")
    persistent = ("a", "b")

    def kill(self, name):
        n = self.nodes[name]
        n.proc.kill()
        n.proc.wait(timeout=10)
        n.exit_status = -9

    def start_again(self, name):
        """Starts a killed node on its store; returns this run's log offset."""
        n = self.nodes[name]
        n.exit_status = None
        offset = n.log_size()
        n.start()  # returns the moment its port accepts
        return offset

    def leave(self, node, cid, v5, topic, present):
        """cid connects at node with Clean Start 0, subscribes topic (QoS 1)
        and leaves; its session stays there."""
        c = Client(self, node, cid, v5)
        self.assertEqual(c.present, present, "%s: Session Present at %s" % (cid, node))
        self.assertEqual(c.subscribe([(topic, 1)]), [1])
        c.raw.close()
        self.assertIsNotNone(self.nodes[node].wait_log("client %s .*disconnected" % cid, timeout=WAIT))

    def early_connect(self, cid, v5, clean=False):
        """Sends cid's CONNECT to a at once; the CONNACK is read later."""
        raw = RawClient(self.nodes["a"].port, timeout=WAIT)
        self.clients.append(raw)
        if v5:
            raw.send(connect5(cid, clean=clean, expiry=0 if clean else 3600))
        else:
            raw.send(connect_pkt(cid, clean=clean))
        c = Client.__new__(Client)  # 29's receiving side, on this socket
        c.raw, c.v5 = raw, v5
        return c

    def connack(self, c, cid):
        ack = c.raw.expect(CONNACK)
        self.assertEqual(ack.body[1], 0, "%s: CONNACK return code" % cid)
        return bool(ack.body[0] & 1)

    def test_reconnect_before_the_start_up_answers(self):
        moved = {"r311": False, "r5": True}  # id -> v5
        for cid, v5 in moved.items():
            self.leave("a", cid, v5, cid + "/old", present=False)
        self.leave("a", "kept", False, "kept/old", present=False)
        self.leave("a", "clean", False, "clean/old", present=False)
        for cid in moved:
            cluster29.ClusterSessionTest.heard_claim(self, "b", cid, "a")
        a = self.nodes["a"]
        self.kill("a")

        for cid, v5 in moved.items():
            self.leave("b", cid, v5, cid + "/new", present=False)  # a is gone: a fresh session at b
        pub = Client(self, "b", "pub-b", v5=False, clean=True)
        for pid, cid in enumerate(moved, 1):
            pub.publish(cid + "/new", b"queued at b", 1, pid)  # PUBACK: in b's offline session

        a.hold_request = os.path.join(a.dir, "send-start-request")
        offset = self.start_again("a")
        early = {cid: self.early_connect(cid, v5) for cid, v5 in moved.items()}
        kept = self.early_connect("kept", False)
        clean = self.early_connect("clean", False, clean=True)
        fresh = self.early_connect("fresh", True)
        for cid in list(moved) + ["kept", "clean", "fresh"]:
            # Waiting for the answers, or (without the wait) connected.
            self.assertIsNotNone(a.wait_log("client %s(: its session restored here waits| connected)" % cid,
                                            offset=offset, timeout=WAIT), cid)
        open(a.hold_request, "w").close()  # the request goes out; b answers

        for cid, c in early.items():
            self.assertTrue(self.connack(c, cid), "%s: Session Present 1: b's session [MQTT-3.2.2-2]" % cid)
            got, _ = c.receive_all(1)
            self.assertEqual(got[0][:2], (cid + "/new", b"queued at b"), "%s: the message queued at b" % cid)
        self.assertTrue(self.connack(kept, "kept"), "kept: a's restored session, the latest")
        self.assertFalse(self.connack(clean, "clean"), "clean: Clean Start 1 [MQTT-3.2.2-1]")
        self.assertFalse(self.connack(fresh, "fresh"), "fresh: no session anywhere")

        pub_a = Client(self, "a", "pub-a", v5=False, clean=True)
        pid = 1
        for cid in moved:
            pub_a.publish(cid + "/old", b"from the stale copy", 1, pid)
            pub_a.publish(cid + "/new", b"from the later session", 1, pid + 1)
            pid += 2
        pub_a.publish("kept/old", b"restored subscription", 1, pid)
        for cid, c in early.items():
            got, _ = c.receive_all(1)
            self.assertEqual(got[0][:2], (cid + "/new", b"from the later session"), cid)
            c.raw.assert_no_packet(wait=0.3)
        got, _ = kept.receive_all(1)
        self.assertEqual(got[0][:2], ("kept/old", b"restored subscription"))

        for cid in list(moved) + ["kept"]:
            self.assertIsNotNone(a.wait_log(HELD % cid, offset=offset, timeout=WAIT), "%s waited" % cid)
        for cid in moved:
            self.assertIsNotNone(a.wait_log(ENDED % cid, offset=offset, timeout=WAIT))
            self.assertIsNotNone(a.wait_log("%s: session fetched from node 'b'" % cid, offset=offset, timeout=WAIT))
        log = a.log_since(offset)
        for cid in ("clean", "fresh"):
            self.assertNotIn(HELD % cid, log, "%s does not wait" % cid)

    def test_two_nodes_that_missed_each_others_request(self):
        # X's copy at a is stale, b's the later one; both nodes are down,
        # then start so that each one's start-up request finds the other
        # not listening: b asks while a is down, and a asks while b's
        # subscription to the requests is not there yet (held by the debug
        # build's WISP_DEBUG_HOLD_DIR_SUB; nodes at two servers of a NATS
        # cluster can miss each other so, for the time a subscription takes
        # to reach the other server). Each node asks a second time 1 to 2 s
        # after it is up (b: after its subscription, which the hold counts
        # as up): b's second request reaches a, and the later copy (b's)
        # wins. With one request each, both copies stayed and X resumed the
        # stale one at a.
        self.leave("a", "twice", False, "twice/old", present=False)
        cluster29.ClusterSessionTest.heard_claim(self, "b", "twice", "a")
        self.kill("a")
        self.leave("b", "twice", False, "twice/new", present=False)
        self.kill("b")
        b, a = self.nodes["b"], self.nodes["a"]
        b.hold_dir_sub = os.path.join(b.dir, "subscribe-dir")
        offset_b = self.start_again("b")
        self.assertIsNotNone(b.wait_log("start-up requests not subscribed yet", offset=offset_b, timeout=WAIT))
        self.assertIsNotNone(b.wait_log("connected to NATS as node 'b'", offset=offset_b, timeout=WAIT))
        offset = self.start_again("a")  # asks: b does not hear it
        self.assertIsNotNone(a.wait_log("connected to NATS as node 'a'", offset=offset, timeout=WAIT))
        open(b.hold_dir_sub, "w").close()
        self.assertIsNotNone(b.wait_log("start-up requests subscribed", offset=offset_b, timeout=WAIT))
        self.assertIsNotNone(a.wait_log(ENDED % "twice", offset=offset, timeout=WAIT),
                             "a's stale copy ended")
        back = Client(self, "a", "twice", False)
        self.assertTrue(back.present, "Session Present 1: b's session, handed over")
        pub = Client(self, "a", "pub-twice", v5=False, clean=True)
        pub.publish("twice/old", b"from the stale copy", 1, 1)
        pub.publish("twice/new", b"from the later session", 1, 2)
        got, _ = back.receive_all(1)
        self.assertEqual(got[0][:2], ("twice/new", b"from the later session"))
        back.raw.assert_no_packet(wait=0.3)


if __name__ == "__main__":
    main()
