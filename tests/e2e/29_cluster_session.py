#!/usr/bin/python3
# ctest: TIMEOUT 300
"""29 cluster session: a persistent session follows its client to the node
it reconnects at (issue 16; cluster/handover.h). Three Wisp nodes and one
nats-server on loopback, as in 24 and 26.

- A 3.1.1 and a v5 client with QoS 1 and QoS 2 subscriptions leave node a
  with a QoS 1 message unacknowledged, a QoS 2 message unacknowledged and a
  QoS 2 message past PUBREC; QoS 1 and 2 messages are published meanwhile.
  They reconnect at node b with clean session 0: Session Present 1, the
  in-flight ones are re-sent (the PUBREL, not the message, for the one past
  PUBREC), every queued message arrives once and in order, and their
  subscriptions work at b without a new SUBSCRIBE; a has let go of them.
- A takeover while connected: the client at a gets DISCONNECT 0x8E, the
  new connection at b Session Present 1; another user asking for the
  session is refused (CONNACK 5) and leaves the owner connected at a; a
  shared group's messages in the session move with it, not also to the
  group's member left at a.
- Node a killed: the reconnect at b falls back to a fresh session
  (Session Present 0), logged and counted; so does a session over the
  holder's cluster.handover_max_bytes.
- With both stores on, the moved session survives kill -9 of the node it
  moved to (its store had it before the old node let go), and the old
  node's restart does not bring its copy back.
- A node restarted (it heard no claim made before) still finds a session
  held at another node: it asks every node at start.
- The cut (handover.h): a QoS 1 and a QoS 2 message from node c, and a
  QoS 2 one of a's own client that went to no stream, published after a
  exported the session and before d imported it (d's import held by
  WISP_DEBUG_HOLD_HANDOVER_IMPORT), reach the client at d once each, in
  a's tail; the other direction: messages a exported that d's consumer
  (held behind by WISP_DEBUG_HOLD_STREAM_ROUTING) routes only after its
  import reach it once too, QoS 2 included, for ten sessions moved at once
  as for one; a holder started after the stream's first messages does not
  wait for them before its tail.
- A node cut off NATS (a TCP relay) while its client's id connects at
  another node: back on NATS it asks again for its ids, and the later
  claim closes its stale connection with DISCONNECT 0x8E; with 1,300
  sessions held there it asks for every one over several loop turns.
- A session with 1,000 queued messages moves; the time b took is printed
  (docs/cluster.md quotes it).

nats-server must be installed (WISP_NATS_SERVER, found by CMake): a missing
one fails the test, never skips it."""

import os
import re
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (CONNACK, DISCONNECT, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, RawClient,  # noqa: E402
                      ack_pkt, main, mqtt_str, packet, subscribe_pkt)
from wisp_cluster import SELECTIVE, Relay, load_script  # noqa: E402

cluster24 = load_script("cluster24", "24_cluster.py")
PREFIX, WAIT = cluster24.PREFIX, cluster24.WAIT


def connect5(client_id, clean=True, expiry=0):
    props = b"\x11" + struct.pack("!I", expiry) if expiry else b""
    var = mqtt_str("MQTT") + bytes([5, 0x02 if clean else 0]) + struct.pack("!H", 60) + bytes([len(props)]) + props
    return packet(0x10, var + mqtt_str(client_id))


def subscribe5(pid, filters):
    body = struct.pack("!H", pid) + b"\x00"
    for f, q in filters:
        body += mqtt_str(f) + bytes([q])
    return packet(0x82, body)


def ack5(ptype, pid):
    """A v5 ack with reason Success: the 3.1.1 form is a valid v5 one [MQTT-3.4.2.1]."""
    return ack_pkt(ptype, pid)


def varint(buf, pos):
    value, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def publish_fields(pkt, v5):
    """(topic, pid or None, payload) of a PUBLISH, v5 properties skipped."""
    (tlen,) = struct.unpack("!H", pkt.body[:2])
    topic = pkt.body[2:2 + tlen].decode()
    pos, pid = 2 + tlen, None
    if pkt.qos:
        (pid,) = struct.unpack("!H", pkt.body[pos:pos + 2])
        pos += 2
    if v5:
        plen, pos = varint(pkt.body, pos)
        pos += plen
    return topic, pid, pkt.body[pos:]


class Client:
    """A raw client of either protocol, acknowledging only when told."""

    def __init__(self, test, node, client_id, v5, clean=False, timeout=WAIT):
        """timeout: for the CONNACK too, which waits up to cluster.handover_timeout
        (5 s, in whole seconds of the broker's timers) when the holder is silent."""
        self.v5 = v5
        self.raw = RawClient(test.nodes[node].port, timeout=timeout)
        test.clients.append(self.raw)
        if v5:
            self.raw.send(connect5(client_id, clean=clean, expiry=0 if clean else 3600))
            ack = self.raw.expect(CONNACK)
            test.assertEqual(ack.body[1], 0, "CONNACK reason")
            self.present = bool(ack.body[0] & 1)
        else:
            test.assertEqual(self.raw.connect(client_id, clean=clean), 0)
            self.present = self.raw.session_present

    def subscribe(self, filters):
        if not self.v5:
            return self.raw.subscribe(filters)
        self.raw.send(subscribe5(1, filters))
        ack = self.raw.expect(9)
        return list(ack.body[3:])

    def next(self, timeout=WAIT):
        return self.raw.recv_packet(timeout)

    def publish(self, topic, payload, qos, pid):
        if self.v5:
            body = mqtt_str(topic) + (struct.pack("!H", pid) if qos else b"") + b"\x00" + payload
            self.raw.send(packet(0x30 | (qos << 1), body))
            want = {1: [PUBACK], 2: [PUBREC]}.get(qos, [])
            for w in want:
                self.raw.expect(w)
            if qos == 2:
                self.raw.send(ack_pkt(PUBREL, pid))
                self.raw.expect(PUBCOMP)
        else:
            self.raw.publish(topic, payload, qos=qos, pid=pid)

    def receive_all(self, count, timeout=WAIT):
        """Reads until count PUBLISHes arrived, completing every flow as a
        receiver: [(topic, payload, qos, dup)], and the PUBRELs seen."""
        got, rels, open_qos2 = [], [], set()
        deadline = time.monotonic() + timeout
        while len(got) < count or open_qos2:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%d of %d messages arrived: %r" % (len(got), count, got))
            pkt = self.raw.recv_packet(left)
            if pkt.type == PUBLISH:
                topic, pid, payload = publish_fields(pkt, self.v5)
                got.append((topic, payload, pkt.qos, pkt.dup))
                if pkt.qos == 1:
                    self.raw.send(ack_pkt(PUBACK, pid))
                elif pkt.qos == 2:
                    self.raw.send(ack_pkt(PUBREC, pid))
                    open_qos2.add(pid)
            elif pkt.type == PUBREL:
                rels.append(pkt.pid)
                open_qos2.discard(pkt.pid)
                self.raw.send(ack_pkt(PUBCOMP, pkt.pid))
            else:
                raise AssertionError("unexpected %r" % pkt)
        return got, rels


class ClusterSessionTest(cluster24.ClusterTest):
    # ClusterTest's own tests are 24's: not run again here.
    for _name in [n for n in vars(cluster24.ClusterTest) if n.startswith("test_")]:
        locals()[_name] = None
    del _name

    def metric(self, node, name):
        body = self.nodes[node].get("/metrics")[1]
        m = re.search(r"(?m)^wisp_%s (\d+)$" % name, body)
        return int(m.group(1)) if m else 0

    def wait_metric(self, node, name, at_least):
        deadline = time.monotonic() + WAIT
        while self.metric(node, name) < at_least:
            if time.monotonic() > deadline:
                self.fail("node %s: %s is %d, wanted %d" % (node, name, self.metric(node, name), at_least))
            time.sleep(0.02)

    def restart(self, name, kill=False, ready="connected to NATS as node '%s'"):
        """Stops node name (SIGTERM, or SIGKILL) and starts it again on its
        store; waits for the log line `ready` (formatted with the name)."""
        n = self.nodes[name]
        if kill:
            n.proc.kill()
            n.proc.wait(timeout=10)
        else:
            n.stop()
        n.exit_status = None
        offset = n.log_size()
        n.start()
        self.assertIsNotNone(n.wait_log(ready.replace("%s", name), offset=offset, timeout=WAIT))

    def relayed_node(self, name):
        """A fourth node reaching NATS through a TCP relay the test can cut."""
        relay = Relay(self.nats.port)
        self.addCleanup(relay.close)
        node = cluster24.Node(name, relay.port)
        self.nodes[name] = node
        node.start()
        self.assertIsNotNone(node.wait_log("connected to NATS as node '%s'" % name, timeout=WAIT))
        return relay, node

    def heard_claim(self, node, cid, holder):
        """Waits until node heard holder's claim of cid (it asks holder only then)."""
        self.assertIsNotNone(self.nodes[node].wait_log("client %s: last claimed by node '%s'" % (cid, holder),
                                                       timeout=WAIT))

    def leave_with_flows_open(self, cid, v5):
        """A client at a with QoS 1 and QoS 2 subscriptions leaves with one
        message of each state in flight; 20 more are published (QoS 1 and 2,
        from node c) while it is away. Returns the payloads it must get."""
        c = Client(self, "a", cid, v5)
        self.assertFalse(c.present)
        self.assertEqual(c.subscribe([(cid + "/q1/#", 1), (cid + "/q2/#", 2)]), [1, 2])
        self.nats.wait_subjects("a", {"%s.%s.q1.>" % (PREFIX, cid), "%s.%s.q2.>" % (PREFIX, cid)})
        pub = Client(self, "c", cid + "-pub", v5=False, clean=True)
        received0 = self.metric("a", "cluster_received_total")
        # In flight at a: WAIT_PUBREC, WAIT_PUBCOMP (PUBREC sent), WAIT_PUBACK.
        pub.publish(cid + "/q2/rec", b"in-flight-rec", 2, 1)
        pkt = c.next()
        self.assertEqual((pkt.type, publish_fields(pkt, v5)[2]), (PUBLISH, b"in-flight-rec"))
        pub.publish(cid + "/q2/rel", b"in-flight-rel", 2, 2)
        pkt = c.next()
        topic, rel_pid, payload = publish_fields(pkt, v5)
        self.assertEqual(payload, b"in-flight-rel")
        c.raw.send(ack_pkt(PUBREC, rel_pid))
        pkt = c.next()
        self.assertEqual((pkt.type, pkt.pid), (PUBREL, rel_pid))  # its PUBCOMP is never sent at a
        pub.publish(cid + "/q1/ack", b"in-flight-ack", 1, 3)
        pkt = c.next()
        self.assertEqual(publish_fields(pkt, v5)[2], b"in-flight-ack")
        c.raw.close()
        self.assertIsNotNone(self.nodes["a"].wait_log("client %s .*disconnected" % cid, timeout=WAIT))
        queued = []
        for i in range(20):
            qos = 1 + i % 2
            payload = b"queued-%02d" % i
            pub.publish("%s/q%d/m" % (cid, qos), payload, qos, 10 + i)
            queued.append(("%s/q%d/m" % (cid, qos), payload, qos))
        # Every one of them reached a's copy of the session before the move.
        self.wait_metric("a", "cluster_received_total", received0 + 23)
        return rel_pid, queued

    def move_and_check(self, cid, v5):
        rel_pid, queued = self.leave_with_flows_open(cid, v5)
        self.heard_claim("b", cid, "a")
        c = Client(self, "b", cid, v5)
        self.assertTrue(c.present, "Session Present 1 at b: the session came from a [MQTT-3.2.2-2]")
        got, rels = c.receive_all(2 + len(queued))
        # [MQTT-4.4.0-1] the unacknowledged PUBLISHes again with DUP, the
        # PUBREL again (its message never again: exactly once), then the queue.
        self.assertEqual(got[:2], [(cid + "/q2/rec", b"in-flight-rec", 2, True),
                                   (cid + "/q1/ack", b"in-flight-ack", 1, True)])
        self.assertEqual([(t, p, q) for t, p, q, _ in got[2:]], queued, "the queue, each once, in order")
        self.assertEqual(rels.count(rel_pid), 1, "the PUBREL pending at a, re-sent once by b")
        c.raw.assert_no_packet(wait=0.3)
        # Its subscriptions are b's now: no SUBSCRIBE needed.
        self.nats.wait_subjects("b", {"%s.%s.q1.>" % (PREFIX, cid)})
        Client(self, "a", cid + "-pub2", v5=False, clean=True).publish(cid + "/q1/after", b"after", 1, 1)
        got, _ = c.receive_all(1)
        self.assertEqual(got[0][:2], (cid + "/q1/after", b"after"))
        self.wait_metric("a", "cluster_sessions_out_total", 1)
        self.assertGreaterEqual(self.metric("b", "cluster_sessions_in_total"), 1)
        self.nats.wait_subjects("a", {"%s.%s.q1.>" % (PREFIX, cid)}, present=False)

    def test_311_session_moves_with_queue_and_flows(self):
        self.move_and_check("m311", v5=False)

    def test_v5_session_moves_with_queue_and_flows(self):
        self.move_and_check("m5", v5=True)

    def test_takeover_while_connected_moves_the_session(self):
        old = Client(self, "a", "twin", v5=True)
        self.assertEqual(old.subscribe([("twin/#", 1)]), [1])
        self.nats.wait_subjects("a", {PREFIX + ".twin.>"})
        self.heard_claim("b", "twin", "a")
        new = Client(self, "b", "twin", v5=True)
        self.assertTrue(new.present)
        pkt = old.raw.expect(DISCONNECT, timeout=WAIT)
        self.assertEqual(pkt.body[:1], b"\x8e", "DISCONNECT reason: Session taken over [MQTT-3.1.4-3]")
        self.assertTrue(old.raw.wait_closed())
        self.nats.wait_subjects("b", {PREFIX + ".twin.>"})
        Client(self, "c", "twin-pub", v5=False, clean=True).publish("twin/x", b"here", 1, 1)
        got, _ = new.receive_all(1)
        self.assertEqual(got[0][:2], ("twin/x", b"here"))
        new.raw.assert_no_packet(wait=0.3)

    def test_shared_subscription_messages_move_once(self):
        # The session's unacknowledged messages of a shared group reach the
        # group once: the member that joins while the session is away takes
        # them (route_share_member_online), and the session that then moves
        # to another node does not bring them too.
        c = Client(self, "a", "shm", v5=True)
        self.assertEqual(c.subscribe([("$share/g/shq/#", 1)]), [1])
        pub = Client(self, "a", "shm-pub", v5=False, clean=True)
        for i in range(3):
            pub.publish("shq/t", b"s%d" % i, 1, 1 + i)
        for i in range(3):  # in flight, never acknowledged: the session holds them
            pkt = c.next()
            self.assertEqual((pkt.type, publish_fields(pkt, True)[2]), (PUBLISH, b"s%d" % i))
        c.raw.close()
        self.assertIsNotNone(self.nodes["a"].wait_log("client shm .*disconnected", timeout=WAIT))
        other = Client(self, "a", "shm-other", v5=False, clean=True)
        # They may come before the SUBACK (MQTT 5 section 3.8.4).
        other.raw.send(subscribe_pkt(1, [("$share/g/shq/#", 1)]))
        taken, subacked = [], False
        while len(taken) < 3 or not subacked:
            pkt = other.next()
            if pkt.type == PUBLISH:
                taken.append(publish_fields(pkt, False)[2])
                other.raw.send(ack_pkt(PUBACK, pkt.pid))
            else:
                self.assertEqual((pkt.type, pkt.body[2:]), (9, b"\x01"))
                subacked = True
        self.assertEqual(taken, [b"s0", b"s1", b"s2"])
        self.heard_claim("b", "shm", "a")
        back = Client(self, "b", "shm", v5=True)
        self.assertTrue(back.present)
        self.wait_metric("a", "cluster_sessions_out_total", 1)
        back.raw.assert_no_packet(wait=0.5)
        other.raw.assert_no_packet(wait=0.5)

    def test_another_user_is_refused_and_the_session_stays(self):
        # As on one node: a client id is not a credential (proto/handle_connect.c).
        owner = RawClient(self.nodes["a"].port)
        self.clients.append(owner)
        self.assertEqual(owner.connect("owned", clean=False, username="alice"), 0)
        self.assertEqual(owner.subscribe([("owned/#", 1)]), [1])
        self.heard_claim("b", "owned", "a")
        thief = RawClient(self.nodes["b"].port, timeout=WAIT)
        self.clients.append(thief)
        self.assertEqual(thief.connect("owned", clean=False, username="mallory"), 5, "CONNACK: not authorised")
        self.assertTrue(owner.is_open(), "the owner's connection at a stays")
        Client(self, "c", "owned-pub", v5=False, clean=True).publish("owned/t", b"still", 1, 1)
        self.assertEqual(owner.recv_publish(timeout=WAIT).payload, b"still")

    def test_fresh_session_when_the_old_node_is_gone(self):
        c = Client(self, "a", "orphan", v5=False)
        self.assertEqual(c.subscribe([("orphan/#", 1)]), [1])
        c.raw.close()
        self.assertIsNotNone(self.nodes["a"].wait_log("client orphan .*disconnected", timeout=WAIT))
        self.heard_claim("b", "orphan", "a")  # before a goes: else b would not ask anyone
        self.nodes["a"].proc.kill()
        self.nodes["a"].proc.wait(timeout=10)
        self.nodes["a"].exit_status = -9
        began = time.monotonic()
        back = Client(self, "b", "orphan", v5=False)
        took = time.monotonic() - began
        self.assertFalse(back.present, "a fresh session: the old one is out of reach")
        # NATS answers "no responders" once it noticed a's connection gone;
        # a request that reached it first waits for cluster.handover_timeout.
        self.assertIsNotNone(self.nodes["b"].wait_log(
            r"orphan: its session at node .* could not be fetched \((the node is gone|no answer within "
            r"cluster.handover_timeout)\)", timeout=WAIT))
        self.assertEqual(self.metric("b", "cluster_handover_failed_total"), 1)
        print("fallback after the old node was killed: CONNACK in %.0f ms" % (took * 1000), file=sys.stderr)
        self.assertEqual(back.subscribe([("orphan/#", 1)]), [1])

    def test_restarted_node_still_finds_the_session_held_elsewhere(self):
        # b hears no claim made while it was down: it asks every node at start.
        c = Client(self, "a", "stay", v5=False)
        self.assertEqual(c.subscribe([("stay/#", 1)]), [1])
        c.raw.close()
        self.assertIsNotNone(self.nodes["a"].wait_log("client stay .*disconnected", timeout=WAIT))
        Client(self, "a", "stay-pub", v5=False, clean=True).publish("stay/t", b"kept", 1, 1)
        self.restart("b", ready="node 'a' holds 1 persistent sessions")
        back = Client(self, "b", "stay", v5=False)
        self.assertTrue(back.present, "b learnt at start that a holds the session")
        got, _ = back.receive_all(1)
        self.assertEqual(got[0][:2], ("stay/t", b"kept"))

    def bulk_move(self, src, dst, cid):
        count = 1000
        c = Client(self, src, cid, v5=False)
        self.assertEqual(c.subscribe([(cid + "/#", 1)]), [1])
        c.raw.close()
        self.assertIsNotNone(self.nodes[src].wait_log("client %s .*disconnected" % cid, timeout=WAIT))
        pub = Client(self, src, cid + "-pub", v5=False, clean=True)
        for i in range(count):
            pub.publish(cid + "/t", b"m%04d" % i + b"x" * 90, 1, 1 + i % 60000)
        self.heard_claim(dst, cid, src)
        offset = self.nodes[dst].log_size()
        began = time.monotonic()
        back = Client(self, dst, cid, v5=False)
        took = time.monotonic() - began
        self.assertTrue(back.present)
        line = self.nodes[dst].wait_log(r"%s: session fetched from node '%s' in \d+ ms" % (cid, src), offset=offset,
                                        timeout=WAIT)
        self.assertIsNotNone(line)
        got, _ = back.receive_all(count, timeout=60)
        self.assertEqual([p[:5] for _, p, _, _ in got], [b"m%04d" % i for i in range(count)])
        print("1,000 queued messages: CONNACK after %.0f ms; %s's log: %s" % (took * 1000, dst, line.strip()),
              file=sys.stderr)

    def test_handover_of_1000_queued_messages(self):
        self.bulk_move("a", "b", "bulk")

    def test_handover_of_1000_queued_messages_between_stores(self):
        # Both stores on: the holder's copy is in its log, the new node writes every record before "done".
        self.extra_node("d", persistence=True)
        self.extra_node("e", persistence=True)
        self.bulk_move("d", "e", "bulkp")
        self.wait_metric("d", "cluster_sessions_out_total", 1)

    def extra_node(self, name, persistence=False, **cluster):
        """Starts node name (more cluster keys in cluster) besides a, b, c."""
        n = self.nodes[name] = self.make_node(name, persistence)
        n.extra_config["cluster"].update(cluster)
        return self.start_node(name)

    def test_moved_session_survives_kill_9_of_the_new_node(self):
        # Both stores on: e writes the session before d lets go of it.
        self.extra_node("d", persistence=True)
        self.extra_node("e", persistence=True)
        c = Client(self, "d", "durable", v5=False)
        self.assertEqual(c.subscribe([("dur/#", 1)]), [1])
        c.raw.close()
        self.assertIsNotNone(self.nodes["d"].wait_log("client durable .*disconnected", timeout=WAIT))
        pub = Client(self, "d", "durable-pub", v5=False, clean=True)
        for i in range(10):
            pub.publish("dur/t", b"d%02d" % i, 1, 1 + i)
        self.heard_claim("e", "durable", "d")
        moved = Client(self, "e", "durable", v5=False)
        self.assertTrue(moved.present)
        got, _ = moved.receive_all(4)
        self.assertEqual([p for _, p, _, _ in got], [b"d%02d" % i for i in range(4)])
        self.wait_metric("d", "cluster_sessions_out_total", 1)  # d let go: e confirmed its store has it
        self.restart("e", kill=True)
        moved.raw.close()
        back = Client(self, "e", "durable", v5=False)
        self.assertTrue(back.present, "e restored the moved session from its store")
        got, _ = back.receive_all(6)
        payloads = [p for _, p, _, _ in got]
        # The 4 acks may not have been read before the kill: QoS 1 may repeat them, nothing is missing.
        while len(payloads) < 10 and payloads[-1] != b"d09":
            more, _ = back.receive_all(1)
            payloads.append(more[0][1])
        first = int(payloads[0][1:])
        self.assertLessEqual(first, 4)
        self.assertEqual(payloads, [b"d%02d" % i for i in range(first, 10)], "the rest, in order, none lost")
        # d's store does not bring its copy back: it recorded the session's end.
        self.restart("d", ready="restored 0 sessions")

    def test_messages_in_the_handover_window_reach_the_moved_client(self):
        """A QoS 1 and a QoS 2 message published after the holder a exported
        the session and before the fetching node d has its subscriptions
        (d's import held by the debug build's WISP_DEBUG_HOLD_HANDOVER_IMPORT,
        released only once a and d both routed them) reach the client at d,
        each once: acknowledged to their publisher, they must not go with a's
        copy when it ends (issue 16)."""
        cid = "window"
        release = os.path.join(self.nats.dir, "release-import")
        os.environ["WISP_DEBUG_HOLD_HANDOVER_IMPORT"] = release
        try:
            d = self.extra_node("d")
        finally:
            del os.environ["WISP_DEBUG_HOLD_HANDOVER_IMPORT"]
        c = Client(self, "a", cid, v5=True)
        self.assertEqual(c.subscribe([(cid + "/q1/#", 1), (cid + "/q2/#", 2)]), [1, 2])
        self.nats.wait_subjects("a", {"%s.%s.q1.>" % (PREFIX, cid), "%s.%s.q2.>" % (PREFIX, cid)})
        c.raw.close()
        self.assertIsNotNone(self.nodes["a"].wait_log("client %s .*disconnected" % cid, timeout=WAIT))
        self.heard_claim("d", cid, "a")
        raw = RawClient(d.port, timeout=WAIT)
        self.clients.append(raw)
        raw.send(connect5(cid, clean=False, expiry=3600))
        # a has sent the session; d holds it, with no subscription of it.
        self.assertIsNotNone(d.wait_log("client %s: import held" % cid, timeout=WAIT))
        received_a, received_d = self.metric("a", "cluster_received_total"), self.metric("d", "cluster_received_total")
        pub = Client(self, "c", cid + "-pub", v5=False, clean=True)
        pub.publish(cid + "/q1/w", b"window-q1", 1, 1)  # PUBACK: acknowledged
        pub.publish(cid + "/q2/w", b"window-q2", 2, 2)  # PUBREC, PUBCOMP
        # Both nodes routed them: a into its exported copy, d past the session it holds.
        self.wait_metric("a", "cluster_received_total", received_a + 2)
        self.wait_metric("d", "cluster_received_total", received_d + 2)
        # One of a's own clients too: no other node wants the topic yet (d
        # announces the session's filters at its import), so it goes to no
        # stream and only a's copy has it. Once a knows the others' interest:
        # in its settling interval after joining it sends everything.
        self.assertIsNotNone(self.nodes["a"].wait_log(SELECTIVE, timeout=WAIT))
        unwanted = self.metric("a", "cluster_unwanted_total")
        Client(self, "a", cid + "-local", v5=False, clean=True).publish(cid + "/q2/own", b"window-own", 2, 3)
        self.assertEqual(self.metric("a", "cluster_unwanted_total"), unwanted + 1, "sent to no other node")
        # And one of a's own clients' that c wants, so it goes to the stream:
        # d routes it past the session it holds, and a learns its stream
        # sequence only when its own consumer sees it come back
        # (handover_own_routed), which the tail needs to carry it.
        watch = Client(self, "c", cid + "-watch", v5=False, clean=True)
        self.assertEqual(watch.subscribe([(cid + "/q1/stream", 1)]), [1])  # a has acknowledged c's filter
        received_d = self.metric("d", "cluster_received_total")
        Client(self, "a", cid + "-local2", v5=False, clean=True).publish(cid + "/q1/stream", b"window-stream", 1, 5)
        self.assertEqual(self.metric("a", "cluster_unwanted_total"), unwanted + 1, "sent to the stream")
        self.wait_metric("d", "cluster_received_total", received_d + 1)
        open(release, "w").close()
        ack = raw.expect(CONNACK)
        self.assertEqual((ack.body[0] & 1, ack.body[1]), (1, 0), "Session Present 1 at d")
        moved = Client.__new__(Client)
        moved.v5, moved.raw = True, raw
        self.wait_metric("a", "cluster_sessions_out_total", 1)  # a ended its copy: d confirmed
        try:
            got, _ = moved.receive_all(4)
        except (AssertionError, TimeoutError) as e:
            self.fail("acknowledged messages published in the handover window lost: %s" % e)
        self.assertEqual(sorted((t, p, q) for t, p, q, _ in got),
                         [(cid + "/q1/stream", b"window-stream", 1), (cid + "/q1/w", b"window-q1", 1),
                          (cid + "/q2/own", b"window-own", 2), (cid + "/q2/w", b"window-q2", 2)],
                         "each acknowledged message once at the moved client [MQTT-4.3.3-2]")
        self.assertIsNotNone(d.wait_log("client %s: 4 messages of the handover window from node 'a'" % cid,
                                        timeout=WAIT))
        raw.assert_no_packet(wait=0.3)
        # The session's filters are d's now: a message published at a after the move reaches it through d.
        Client(self, "a", cid + "-after", v5=False, clean=True).publish(cid + "/q2/after", b"after", 2, 4)
        got, _ = moved.receive_all(1)
        self.assertEqual(got[0][:3], (cid + "/q2/after", b"after", 2))
        raw.assert_no_packet(wait=0.3)

    def test_messages_the_holder_exported_do_not_reach_the_moved_client_twice(self):
        """The other direction of the cut: d's stream consumer is behind a's
        (the debug build's WISP_DEBUG_HOLD_STREAM_ROUTING holds d's routing
        until released). A QoS 2 and a QoS 1 message from node c, and a QoS 2
        one from a's own client that c also wants (so it is on the stream), reach
        a's copy before the export and come with the session; d routes them
        only after its import. Each must reach the moved client once
        [MQTT-4.3.3-2]: d keeps the holder's cut off the session."""
        cid = "dup"
        release = os.path.join(self.nats.dir, "release-routing")
        os.environ["WISP_DEBUG_HOLD_STREAM_ROUTING"] = release
        try:
            d = self.extra_node("d")
        finally:
            del os.environ["WISP_DEBUG_HOLD_STREAM_ROUTING"]
        c = Client(self, "a", cid, v5=True)
        self.assertEqual(c.subscribe([(cid + "/q1/#", 1), (cid + "/q2/#", 2)]), [1, 2])
        self.nats.wait_subjects("a", {"%s.%s.q1.>" % (PREFIX, cid), "%s.%s.q2.>" % (PREFIX, cid)})
        c.raw.close()
        self.assertIsNotNone(self.nodes["a"].wait_log("client %s .*disconnected" % cid, timeout=WAIT))
        watcher = Client(self, "c", cid + "-watch", v5=False, clean=True)
        self.assertEqual(watcher.subscribe([(cid + "/q2/own", 2)]), [2])
        self.heard_claim("d", cid, "a")
        received_a = self.metric("a", "cluster_received_total")
        pub = Client(self, "c", cid + "-pub", v5=False, clean=True)
        pub.publish(cid + "/q2/x", b"dup-q2", 2, 1)
        pub.publish(cid + "/q1/x", b"dup-q1", 1, 2)
        self.wait_metric("a", "cluster_received_total", received_a + 2)  # in a's copy
        sent = self.metric("a", "cluster_sent_total")
        Client(self, "a", cid + "-local", v5=False, clean=True).publish(cid + "/q2/own", b"dup-own", 2, 3)
        self.assertEqual(self.metric("a", "cluster_sent_total"), sent + 1, "to the stream: c wants it")
        self.assertEqual(watcher.receive_all(1)[0][0][:2], (cid + "/q2/own", b"dup-own"))
        self.assertIsNotNone(d.wait_log("stream routing held", timeout=WAIT))
        moved = Client(self, "d", cid, v5=True)
        self.assertTrue(moved.present, "Session Present 1 at d")
        got, _ = moved.receive_all(3)
        self.assertEqual(sorted((t, p, q) for t, p, q, _ in got),
                         [(cid + "/q1/x", b"dup-q1", 1), (cid + "/q2/own", b"dup-own", 2),
                          (cid + "/q2/x", b"dup-q2", 2)], "the session's queue, from a")
        received_d = self.metric("d", "cluster_received_total")
        open(release, "w").close()
        # d routes the three now, after its import: none may reach the session again.
        self.wait_metric("d", "cluster_received_total", received_d + 3)
        self.wait_metric("a", "cluster_sessions_out_total", 1)
        moved.raw.assert_no_packet(wait=0.5)
        # What is published from now on still arrives, once.
        pub.publish(cid + "/q2/x", b"dup-after", 2, 4)
        got, _ = moved.receive_all(1)
        self.assertEqual(got[0][:3], (cid + "/q2/x", b"dup-after", 2))
        moved.raw.assert_no_packet(wait=0.3)

    def test_a_message_many_moved_sessions_brought_reaches_none_twice(self):
        """The same cut for many sessions at once (a node drained): ten
        sessions at a hold one QoS 2 message from c when they move to d, whose
        stream routing is held until all ten are there. d routes the message
        after the imports: none of the ten may get it a second time
        [MQTT-4.3.3-2]. Before, the sessions a stream message was kept from
        were at most eight: the ninth and tenth got it twice."""
        ids = ["many%d" % i for i in range(10)]
        release = os.path.join(self.nats.dir, "release-routing-many")
        os.environ["WISP_DEBUG_HOLD_STREAM_ROUTING"] = release
        try:
            d = self.extra_node("d")
        finally:
            del os.environ["WISP_DEBUG_HOLD_STREAM_ROUTING"]
        for cid in ids:
            c = Client(self, "a", cid, v5=True)
            self.assertEqual(c.subscribe([("many/#", 2)]), [2])
            c.raw.close()
            self.assertIsNotNone(self.nodes["a"].wait_log("client %s .*disconnected" % cid, timeout=WAIT))
        self.nats.wait_subjects("a", {"%s.many.>" % PREFIX})
        for cid in ids:
            self.heard_claim("d", cid, "a")
        received_a = self.metric("a", "cluster_received_total")
        Client(self, "c", "many-pub", v5=False, clean=True).publish("many/x", b"once", 2, 1)
        self.wait_metric("a", "cluster_received_total", received_a + 1)  # in the ten copies
        self.assertIsNotNone(d.wait_log("stream routing held", timeout=WAIT))
        moved = []
        for cid in ids:
            m = Client(self, "d", cid, v5=True)
            self.assertTrue(m.present, "Session Present 1 at d")
            got, _ = m.receive_all(1)
            self.assertEqual(got[0][:3], ("many/x", b"once", 2), "the session's queue, from a")
            moved.append(m)
        received_d = self.metric("d", "cluster_received_total")
        open(release, "w").close()
        self.wait_metric("d", "cluster_received_total", received_d + 1)
        for cid, m in zip(ids, moved):
            try:
                m.raw.assert_no_packet(wait=0.3)
            except AssertionError as e:
                self.fail("%s got the message a second time: %s" % (cid, e))

    def test_holder_started_after_the_streams_messages_does_not_wait_for_them(self):
        """b routed five stream messages before node d started: d's consumer
        never gets them, so d does not wait for them before it sends its
        tail when the session moves from d to b (it would wait
        cluster.handover_timeout and log that it did not catch up)."""
        watcher = Client(self, "b", "early-watch", v5=False, clean=True)
        self.assertEqual(watcher.subscribe([("early/#", 1)]), [1])
        pub = Client(self, "c", "early-pub", v5=False, clean=True)
        for i in range(5):
            pub.publish("early/t", b"e%d" % i, 1, 1 + i)
        self.assertEqual(len(watcher.receive_all(5)[0]), 5)  # b routed them from the stream
        d = self.extra_node("d")
        c = Client(self, "d", "late", v5=False)
        self.assertEqual(c.subscribe([("late/#", 1)]), [1])
        c.raw.close()
        self.assertIsNotNone(d.wait_log("client late .*disconnected", timeout=WAIT))
        self.heard_claim("b", "late", "d")
        moved = Client(self, "b", "late", v5=False)
        self.assertTrue(moved.present)
        self.wait_metric("d", "cluster_sessions_out_total", 1)
        self.assertIsNotNone(d.wait_log("late: 0 messages of the handover window passed on", timeout=WAIT))
        self.assertIsNone(d.wait_log("did not catch up", timeout=0.2))

    def test_node_back_on_nats_ends_the_session_claimed_meanwhile(self):
        """Node p alone loses NATS (a relay cut) while its client's id connects
        at b: p hears no claim. Once p is back on NATS it asks again for the
        ids it holds, b answers with its later claim, and p closes its stale
        connection as a takeover: DISCONNECT 0x8E [MQTT-3.1.4-3]."""
        relay, p = self.relayed_node("p")
        old = Client(self, "p", "away", v5=True)
        self.assertEqual(old.subscribe([("away/#", 1)]), [1])
        self.heard_claim("b", "away", "p")
        offset = p.log_size()
        relay.cut()
        self.assertIsNotNone(p.wait_log("lost the NATS connection", offset=offset, timeout=WAIT))
        # b asks p for the session: nobody answers on p's subject, a fresh one.
        new = Client(self, "b", "away", v5=True)
        self.assertFalse(new.present)
        self.assertEqual(new.subscribe([("away/#", 1)]), [1])
        self.assertTrue(old.raw.is_open(), "p heard nothing")
        relay.restore()
        self.assertIsNotNone(p.wait_log("connected to NATS as node 'p'", offset=offset, timeout=WAIT))
        pkt = old.raw.expect(DISCONNECT, timeout=WAIT)
        self.assertEqual(pkt.body[:1], b"\x8e", "DISCONNECT reason: Session taken over [MQTT-3.1.4-3]")
        self.assertTrue(old.raw.wait_closed())
        self.assertIsNotNone(p.wait_log("back on NATS: asked again for the 1 client ids held here", offset=offset,
                                        timeout=WAIT))
        self.wait_metric("p", "cluster_taken_over_total", 1)
        # The connection at b stays and gets what is published.
        Client(self, "c", "away-pub", v5=False, clean=True).publish("away/x", b"here", 1, 1)
        got, _ = new.receive_all(1)
        self.assertEqual(got[0][:2], ("away/x", b"here"))
        new.raw.assert_no_packet(wait=0.3)

    def test_node_back_on_nats_asks_again_for_many_ids_over_several_turns(self):
        """As above with 1,300 sessions held at p, more than one step of p's
        walk over them (512 a loop turn, so the turn and the claims queued
        stay bounded): back on NATS p asks again for each of them, and ends
        the three whose ids connected at b meanwhile, and only those."""
        relay, p = self.relayed_node("p")
        ids = ["many-%04d" % i for i in range(1300)]
        for cid in ids:
            c = RawClient(p.port)
            self.assertEqual(c.connect(cid, clean=False), 0)
            c.close()
        moved = [ids[0], ids[650], ids[1299]]
        for cid in moved:
            self.heard_claim("b", cid, "p")
        offset = p.log_size()
        relay.cut()
        self.assertIsNotNone(p.wait_log("lost the NATS connection", offset=offset, timeout=WAIT))
        for cid in moved:
            self.assertFalse(Client(self, "b", cid, v5=False).present, "p is away: a fresh session")
        relay.restore()
        self.assertIsNotNone(p.wait_log("back on NATS: asked again for the 1300 client ids held here",
                                        offset=offset, timeout=WAIT))
        self.wait_metric("p", "cluster_taken_over_total", 3)
        stayed = Client(self, "p", ids[1], v5=False)
        self.assertTrue(stayed.present, "a session nobody else claimed stays at p")
        self.assertEqual(self.metric("p", "cluster_taken_over_total"), 3)

    def test_session_over_handover_max_bytes_starts_fresh(self):
        self.extra_node("d", handover_max_bytes=65536)
        c = Client(self, "d", "big", v5=False)
        self.assertEqual(c.subscribe([("big/#", 1)]), [1])
        c.raw.close()
        self.assertIsNotNone(self.nodes["d"].wait_log("client big .*disconnected", timeout=WAIT))
        pub = Client(self, "d", "big-pub", v5=False, clean=True)
        for i in range(100):
            pub.publish("big/t", b"x" * 1000, 1, 1 + i)  # ~100 KB of records, over 64 KiB
        self.heard_claim("b", "big", "d")
        back = Client(self, "b", "big", v5=False)
        self.assertFalse(back.present, "too big to move: a fresh session")
        self.assertIsNotNone(self.nodes["b"].wait_log("big: its session at node 'd' could not be fetched "
                                                      r"\(over cluster.handover_max_bytes\)", timeout=WAIT))
        self.assertIsNotNone(self.nodes["d"].wait_log("big: its session cannot move", timeout=WAIT))
        self.assertEqual(self.metric("b", "cluster_handover_failed_total"), 1)


if __name__ == "__main__":
    main()
