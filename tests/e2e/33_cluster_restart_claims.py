#!/usr/bin/python3
# ctest: TIMEOUT 300
"""33 cluster restart claims: a node restarted after `kill -9` does not keep
a stale copy of a persistent session whose client id connected at another
node while it was down (issue 16; cluster/presence.h, docs/cluster.md
"Client ids and sessions"). Two Wisp nodes with persistence and one
nats-server -js on loopback.

- Client X holds a persistent session at a (subscribed to x/old); a is
  killed; X connects at b (Session Present 0: a is gone) and subscribes
  x/new there; a restarts. a learns at start that b holds X from a later
  connect and ends its restored copy (logged, cluster/clients/taken_over);
  X reconnecting at a gets b's session (Session Present 1, handed over):
  x/new is delivered, x/old never is. 3.1.1 and v5.
- The other way round: the node holding the stale copy restarts first,
  while the node with the later connect is down (nobody to ask); when that
  one restarts, the stale node's answer shows its own copy is the later
  one, so it asks the stale node again (a recheck claim) and that node
  ends its copy: X reconnecting at the stale node gets the later session.
- A v5 copy ended so with a delayed will pending does not publish it: its
  client connected again (at b) since [MQTT-3.1.3-9].
- Nobody claimed X meanwhile: a keeps its restored copy (X resumes it at a
  with its subscription), and the restored session still moves to b when X
  reconnects there.
- A store without claim times (SESSION_PUT versions 1 and 2, as every store
  before them) still loads at a cluster node, and its session resumes.

nats-server must be installed (WISP_NATS_SERVER, found by CMake): a missing
one fails the test, never skips it."""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import CONNACK, RawClient, main, mqtt_str, packet  # noqa: E402
from wisp_cluster import load_script  # noqa: E402

cluster24 = load_script("cluster24", "24_cluster.py")
cluster29 = load_script("cluster29", "29_cluster_session.py")
WAIT = cluster24.WAIT
Client = cluster29.Client

ENDED = "client %s: node '%s' holds its session from a later connect"


def connect5_will(client_id, will_topic, will_payload, delay):
    """A v5 CONNECT, Clean Start 0, Session Expiry 3600 s, with a QoS 1 will
    delayed by `delay` seconds."""
    props = b"\x11" + struct.pack("!I", 3600)
    will_props = b"\x18" + struct.pack("!I", delay)
    var = mqtt_str("MQTT") + bytes([5, 0x04 | 0x08]) + struct.pack("!H", 60) + bytes([len(props)]) + props
    payload = mqtt_str(client_id) + bytes([len(will_props)]) + will_props + mqtt_str(will_topic) + \
        mqtt_str(will_payload)
    return packet(0x10, var + payload)


class RestartClaimsTest(cluster29.ClusterSessionTest):
    # 24's and 29's own tests are theirs: not run again here. Their
    # helpers (stop_nodes, the logs on failure, metric, heard_claim) are used.
    for _name in [n for n in dir(cluster29.ClusterSessionTest) if n.startswith("test_")]:
        locals()[_name] = None
    del _name

    node_names = ("a", "b")
    persistent = ("a", "b")  # nodes each with its store

    def setUp(self):
        super().setUp()
        for name in ("a", "b"):
            self.answers_requests(name)

    def kill(self, name):
        n = self.nodes[name]
        n.proc.kill()
        n.proc.wait(timeout=10)
        n.exit_status = -9

    def start_again(self, name, ready):
        """Starts a killed node on its store; waits for the log line `ready`;
        returns the log offset of this run."""
        n = self.nodes[name]
        n.exit_status = None
        offset = n.log_size()
        n.start()
        self.assertIsNotNone(n.wait_log(ready, offset=offset, timeout=WAIT), "node %s: %r" % (name, ready))
        return offset

    def answers_requests(self, name):
        """Waits until node name's subscription to the start-up requests
        (on its <node>-share connection, set up after "connected to NATS")
        is at nats-server: a node started before that asks it in vain."""
        self.nats.wait_subjects(name + "-share", {"$WISP.%s.ho.dir" % cluster24.PREFIX})

    def leave(self, node, cid, v5, topic, present):
        """cid connects at node with Clean Start 0, subscribes topic (QoS 1)
        and leaves; its session stays there."""
        c = Client(self, node, cid, v5)
        self.assertEqual(c.present, present, "Session Present at %s" % node)
        self.assertEqual(c.subscribe([(topic, 1)]), [1])
        c.raw.close()
        self.assertIsNotNone(self.nodes[node].wait_log("client %s .*disconnected" % cid, timeout=WAIT))

    def only_new_arrives(self, c, node, old, new):
        """Publishes to old, then to new, from a client at node: c gets new
        only (the stale copy's old subscription is gone)."""
        pub = Client(self, node, "pub-" + new.replace("/", "-"), v5=False, clean=True)
        pub.publish(old, b"from the stale copy", 1, 1)
        pub.publish(new, b"from the later session", 1, 2)
        got, _ = c.receive_all(1)
        self.assertEqual(got[0][:2], (new, b"from the later session"))
        c.raw.assert_no_packet(wait=0.5)

    def resumes(self, node, cid, topic, payload, why):
        """cid (3.1.1) connects at node and finds its session there (why:
        the message if not); a message published to topic at node reaches
        it. Returns its client."""
        back = Client(self, node, cid, v5=False)
        self.assertTrue(back.present, why)
        Client(self, node, "%s-pub-%s" % (cid, node), v5=False, clean=True).publish(topic, payload, 1, 1)
        got, _ = back.receive_all(1)
        self.assertEqual(got[0][:2], (topic, payload))
        return back

    def claimed_while_down(self, cid, v5):
        self.leave("a", cid, v5, cid + "/old", present=False)
        self.heard_claim("b", cid, "a")  # b asks a for it (and a is gone then)
        self.kill("a")
        self.leave("b", cid, v5, cid + "/new", present=False)  # a fresh session at b: a is gone
        taken0 = self.metric("b", "cluster_taken_over_total")
        # a heard b's answer (which says b holds the id): what X finds at a now.
        offset = self.start_again("a", "node 'b' holds 1 persistent sessions")
        back = Client(self, "a", cid, v5)
        self.assertTrue(back.present, "Session Present 1: b's session, handed over to a [MQTT-3.2.2-2]")
        self.only_new_arrives(back, "a", cid + "/old", cid + "/new")
        self.assertIsNotNone(self.nodes["a"].wait_log(ENDED % (cid, "b"), offset=offset, timeout=WAIT))
        self.assertIsNotNone(self.nodes["a"].wait_log(r"%s: session fetched from node 'b'" % cid, offset=offset,
                                                      timeout=WAIT))
        self.assertEqual(self.metric("a", "cluster_taken_over_total"), 1, "a's stale copy counted")
        self.assertEqual(self.metric("b", "cluster_taken_over_total"), taken0, "b's copy moved, not taken over")

    def test_restarted_node_ends_its_copy_claimed_meanwhile_311(self):
        self.claimed_while_down("x311", v5=False)

    def test_restarted_node_ends_its_copy_claimed_meanwhile_v5(self):
        self.claimed_while_down("x5", v5=True)

    def test_stale_copys_delayed_will_is_not_published(self):
        # X (v5) leaves a without a DISCONNECT: its will waits 60 s. X comes
        # back at b while a is down; a's restart ends its copy, and the will
        # (of an absence that ended at b) is not published.
        watcher = Client(self, "b", "watcher", v5=False, clean=True)
        self.assertEqual(watcher.subscribe([("w5/#", 1)]), [1])
        raw = RawClient(self.nodes["a"].port)
        self.clients.append(raw)
        raw.send(connect5_will("w5", "w5/will", "w5 is gone", 60))
        self.assertEqual(raw.expect(CONNACK).body[1], 0)
        raw.close()  # no DISCONNECT: the will is due in 60 s
        self.assertIsNotNone(self.nodes["a"].wait_log("client w5 .*disconnected", timeout=WAIT))
        self.heard_claim("b", "w5", "a")
        self.kill("a")
        self.leave("b", "w5", True, "w5/new", present=False)
        self.start_again("a", ENDED % ("w5", "b"))
        # What a publishes after the end reaches the watcher after the will would have.
        Client(self, "a", "w5-marker", v5=False, clean=True).publish("w5/marker", b"after the end", 1, 1)
        got, _ = watcher.receive_all(1)
        self.assertEqual(got[0][:2], ("w5/marker", b"after the end"), "no will before it")
        watcher.raw.assert_no_packet(wait=0.5)

    def test_later_copy_restarting_second_ends_the_stale_one(self):
        # X at b; b killed; X at a (fresh: b is gone); a killed; b restarts
        # with its stale copy and nobody to ask; a restarts: its copy is the
        # later one, it asks b again, and b ends its copy.
        self.leave("b", "y", False, "y/old", present=False)
        self.heard_claim("a", "y", "b")
        self.kill("b")
        self.leave("a", "y", False, "y/new", present=False)
        self.kill("a")
        self.start_again("b", "connected to NATS as node 'b'")
        self.answers_requests("b")
        self.start_again("a", "node 'b' holds 1 persistent sessions")
        # a's recheck claim reaches b after b's answer: b logs the end of its copy.
        self.assertIsNotNone(self.nodes["b"].wait_log(ENDED % ("y", "a"), timeout=WAIT))
        self.assertEqual(self.metric("b", "cluster_taken_over_total"), 1)
        back = Client(self, "b", "y", v5=False)
        self.assertTrue(back.present, "Session Present 1: a's session, handed over to b")
        self.only_new_arrives(back, "b", "y/old", "y/new")

    def test_copy_nobody_claimed_is_kept_and_still_moves(self):
        self.leave("a", "k", False, "k/t", present=False)
        self.leave("b", "other", False, "other/t", present=False)  # so that b has something to tell a
        self.kill("a")
        self.start_again("a", "node 'b' holds 1 persistent sessions")
        back = self.resumes("a", "k", "k/t", b"kept", "a kept its copy: nobody claimed k meanwhile")
        self.assertEqual(self.metric("a", "cluster_taken_over_total"), 0)
        back.raw.close()
        self.assertIsNotNone(self.nodes["a"].wait_log("client k .*disconnected", timeout=WAIT))
        self.heard_claim("b", "k", "a")
        self.resumes("b", "k", "k/t", b"moved", "the restored session moves to b")

    def test_store_without_claim_times_still_loads(self):
        # A store written without claim times, as every store before them
        # (a node without a cluster writes SESSION_PUT versions 1 and 2
        # only, byte for byte those of an older Wisp): the cluster node
        # restored from it keeps the session, and its client resumes it.
        a = self.nodes["a"]
        a.stop()
        cluster = a.extra_config.pop("cluster")
        a.exit_status = None
        a.start()
        self.leave("a", "legacy", False, "legacy/t", present=False)
        a.stop()
        a.extra_config["cluster"] = cluster
        self.leave("b", "other", False, "other/t", present=False)  # so that b has something to tell a
        self.start_again("a", "node 'b' holds 1 persistent sessions")
        self.resumes("a", "legacy", "legacy/t", b"old store", "the session from the store without claim times")


if __name__ == "__main__":
    main()
