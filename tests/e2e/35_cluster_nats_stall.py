#!/usr/bin/python3
# ctest: TIMEOUT 300
"""35 cluster: a frozen NATS server must not stall a node's own clients
(issue 16: "a node that loses NATS keeps serving its local clients"; the
brief: a slow or hostile party must never stall the others).

nats-server is stopped with SIGSTOP: its sockets stay open but it reads
nothing, so every byte a node writes to it piles up in the kernel's socket
buffers and then in cnats's. Node a then publishes a flood of QoS 0
messages that a subscriber on node b wants (enough to fill those buffers
many times over). Before the fix, the loop thread of a wrote them to NATS
itself and blocked once the socket was full: a QoS 1 round trip between
two clients of a, which never needs NATS, stopped completing.

Each round trip below must complete within ROUND_TRIP seconds (a generous
bound: the failure is a hang, not a slow answer). In the first test node a
gives each write to NATS LONG_DEADLINE seconds (cluster.write_deadline,
past ROUND_TRIP), and new clients subscribe to filters new to a during the
stall, each with a round trip while its SUBACK is pending: a filter's SUB
and its announcement made on the loop thread (before sender.h's control
operations) waited for the stalled write's lock, so the round trip hung. After SIGCONT the cluster
works again: a message published on a reaches a subscriber on b. And a
node stops on SIGTERM during such a stall (before the fix it never did).

FrozenReconnectTest: once the node counts both its connections as lost,
cnats reconnects them to the frozen server, each attempt holding the
connection's lock for cluster.connect_timeout (30 s here); local clients,
new clients' claims, a CONNECT for another node's session and shared
groups made and left meanwhile must not wait for it (cluster/link.h).

PendingLimitTest: cnats's queue per subscription (between its socket reader
and its delivery thread) holds at most cluster.inbound_queue messages; with
b's delivery thread starved (a debug build's WISP_DEBUG_SLOW_NATS_DELIVERY)
what cnats drops is counted in $SYS and logged. With cnats's default limit
(65,536) nothing is dropped and the test fails.

nats-server must be installed (WISP_NATS_SERVER): a missing one fails the
test, never skips it."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (CONNACK, DISCONNECT_PKT, PUBACK, SANITIZER_RE, SUBACK, RawClient, connect_pkt, main,  # noqa: E402
                      publish_pkt, subscribe_pkt)
from wisp_cluster import ClusterCase, Node  # noqa: E402

WAIT = 20.0  # seconds any awaited cluster event may take
ROUND_TRIP = 5.0  # seconds one local QoS 1 round trip may take (a hang fails it)
ROUNDS = 50  # local round trips during the stall
LOST_PHASE = 4.0  # seconds of local round trips once a knows NATS is lost (cnats reconnecting meanwhile)
FLOOD_PAYLOAD = 8192  # bytes per flood message
FLOOD_BYTES = 48 << 20  # what the flood publishes: many times the socket buffers
FLOOD_SEND_TIMEOUT = 3.0  # a flooder blocked this long means a stopped reading it
LONG_DEADLINE = 10  # seconds: LongDeadlineNode's write_deadline, well past ROUND_TRIP


class StallNode(Node):
    """A cluster node beating every second (it knows the other's interest
    sooner)."""

    def config(self):
        cfg = super().config()
        cfg["cluster"]["interest_interval"] = 1
        return cfg


class LongDeadlineNode(StallNode):
    """A node whose writes to NATS may wait LONG_DEADLINE seconds: a loop
    that waited for a stalled write's lock would hang past ROUND_TRIP.
    It beats every 5 s (the default), so that it forgets b (after three
    beats unheard) only after it noticed the loss: a node forgotten while
    NATS still counts as up sends QoS 1 through the stream for b's
    consumer, and its PUBACKs then wait for the frozen JetStream."""

    def config(self):
        cfg = super().config()
        cfg["cluster"]["write_deadline"] = LONG_DEADLINE * 1000
        cfg["cluster"]["interest_interval"] = 5
        return cfg


class FrozenReconnectNode(StallNode):
    """A node that notices a frozen server within about 2 s (PINGs 1 s
    apart) and whose connect attempts last 30 s (cluster.connect_timeout):
    cnats holds a connection's lock through each attempt, so a loop that
    still asked cnats anything would stop for that long, far past
    ROUND_TRIP."""

    def config(self):
        cfg = super().config()
        cfg["cluster"]["ping_interval"] = 1
        cfg["cluster"]["connect_timeout"] = 30
        cfg["cluster"]["handover_timeout"] = 2  # a session request with no answer falls back sooner
        return cfg


class SlowDeliveryNode(StallNode):
    """A node whose cnats delivery thread is starved (debug builds:
    WISP_DEBUG_SLOW_NATS_DELIVERY, 2 ms per message), with the smallest
    inbound_queue: cnats's pending limit per subscription fills. Its
    filters are read through cnats (no data connection, as while that one
    is down)."""

    def config(self):
        cfg = super().config()
        cfg["cluster"]["inbound_queue"] = 16
        cfg["cluster"]["data_connection"] = False
        return cfg

    def _env(self):
        return dict(super()._env(), WISP_DEBUG_SLOW_NATS_DELIVERY="1")


class Flooder(threading.Thread):
    """Publishes FLOOD_BYTES of QoS 0 on topic at port, in the background;
    stops early when the broker stops reading for FLOOD_SEND_TIMEOUT."""

    def __init__(self, port, topic):
        super().__init__(daemon=True)
        self.c = RawClient(port)
        self.assert_connected = self.c.connect("flooder")
        self.topic = topic
        self.sent = 0
        self.blocked = False

    def run(self):
        pkt = publish_pkt(self.topic, b"f" * FLOOD_PAYLOAD)
        batch = pkt * 16
        self.c.sock.settimeout(FLOOD_SEND_TIMEOUT)
        try:
            while self.sent < FLOOD_BYTES:
                self.c.sock.sendall(batch)
                self.sent += len(batch)
        except socket.timeout:
            self.blocked = True
        except OSError:
            pass


class ClusterPair(ClusterCase):
    """Nodes a and b (a with persistence) and their nats-server."""

    node_names = ("a", "b")
    # a keeps QoS 1/2 in its store while NATS is lost (store and forward):
    # without persistence their acks wait for NATS.
    persistent = ("a",)
    settle = True
    wait = WAIT

    def node_type(self, name):
        return StallNode

    def make_node(self, name, persistence=None):
        return self.node_type(name)(name, self.nats.port, persistence=name in self.persistent)

    def setUp(self):
        super().setUp()
        self.addCleanup(self.resume_nats)  # cleanups run last first: NATS resumes before the nodes stop

    def resume_nats(self):
        if self.nats.proc and self.nats.proc.poll() is None:
            self.nats.proc.send_signal(signal.SIGCONT)

    def metric(self, node, name):
        m = re.search(r"(?m)^wisp_%s ([0-9]+)$" % name, self.nodes[node].get("/metrics")[1])
        self.assertIsNotNone(m, "no wisp_%s on node %s" % (name, node))
        return int(m.group(1))

    def crossing(self, pub, sub, topic, label):
        """Publishes on topic at pub's node until sub (on the other node)
        gets one: QoS 0 crosses at most once, so a copy lost while the
        nodes settle is sent again. Bounded in count and time."""
        deadline = time.monotonic() + WAIT
        for i in range(int(WAIT * 2)):
            payload = b"%s-%d" % (label, i)
            pub.send(publish_pkt(topic, payload))
            try:
                while True:
                    p = sub.recv_publish(timeout=0.5)
                    if p.topic == topic and p.payload.startswith(label + b"-"):
                        return
            except AssertionError:  # nothing within 0.5 s (RawClient.expect's timeout)
                pass
            self.assertLess(time.monotonic(), deadline)
        self.fail("no message on %s crossed from a to b within %ss" % (topic, WAIT))

    def local_round_trip(self, pub, sub, pid):
        """A PUBLISH from pub to sub, both on node a, QoS 1 for odd packet
        ids and QoS 0 for even ones: its PUBACK (QoS 1) and its delivery,
        each within ROUND_TRIP seconds. Returns (qos, seconds)."""
        qos = pid % 2
        payload = b"rt-%d" % pid
        start = time.monotonic()
        pub.send(publish_pkt("local/rt", payload, qos=qos, pid=pid if qos else None))
        try:
            if qos:
                ack = pub.expect(PUBACK, timeout=ROUND_TRIP)
                self.assertEqual(ack.pid, pid)
            got = sub.recv_publish(timeout=ROUND_TRIP)
        except (AssertionError, socket.timeout) as e:
            self.fail("local QoS %d round trip %d on node a did not complete within %ss while NATS is frozen: %s"
                      % (qos, pid, ROUND_TRIP, e))
        self.assertEqual((got.topic, got.payload), ("local/rt", payload))
        return qos, time.monotonic() - start

    def new_client(self, port, i, during=None):
        """A client connecting and subscribing to a filter new to the node
        (its claim, and its NATS SUB and announcement, are the loop's own
        NATS calls); returns the seconds its CONNACK and its SUBACK took.
        during(): a round trip while the SUBACK is pending (which the
        interest gate may hold, for this client only, up to
        cluster.interest_ack_timeout)."""
        start = time.monotonic()
        c = RawClient(port, timeout=ROUND_TRIP)
        try:
            self.assertEqual(c.connect("late-%d" % i), 0)
            connected = time.monotonic()
            c.send(subscribe_pkt(1, [("new/%d" % i, 0)]))
            if during:
                during()
            ack = c.expect(SUBACK, timeout=ROUND_TRIP)
            self.assertEqual((ack.pid, list(ack.body[2:])), (1, [0]))
            return connected - start, time.monotonic() - connected
        finally:
            c.close()

    def flood_subscriber(self):
        """A subscriber on b to the flood's topic: b wants it from a."""
        flood_sub = self.client("b", "flood-sub")
        self.assertEqual(flood_sub.subscribe([("flood/#", 0)]), [0])
        return flood_sub

    def stall(self, flood_sub):
        """nats-server is frozen (SIGSTOP), the flood's subscriber reads no
        more, and a flooder publishes to a until it is done or blocked;
        returns the flooder. Frozen first: b's announcement that its last
        flood/# subscriber is gone must not reach a, which would then send
        the flood to no one and drop nothing (a CI run saw it win the race
        when the subscriber was closed first)."""
        self.nats.proc.send_signal(signal.SIGSTOP)
        flood_sub.close()
        flooder = Flooder(self.nodes["a"].port, "flood/x")
        self.clients.append(flooder.c)
        self.assertEqual(flooder.assert_connected, 0)
        flooder.start()
        flooder.join(timeout=WAIT * 3)
        self.assertFalse(flooder.is_alive(), "the flooder is neither done nor blocked")
        return flooder

    def round_trips(self, pub, sub, first, count, seconds, port=None):
        """count round trips from packet id first on, or as many as fit in
        seconds if that is not None (bounded by count either way), and with
        port a new client every 20th; returns the slowest of each QoS, of
        the CONNACKs and of the SUBACKs."""
        slowest = [0.0, 0.0, 0.0, 0.0]
        end = time.monotonic() + seconds if seconds else None

        def one(pid):
            qos, took = self.local_round_trip(pub, sub, pid % 65535 + 1)
            slowest[qos] = max(slowest[qos], took)

        for i in range(count):
            if end and time.monotonic() >= end:
                break
            one(first + i)
            if port and i % 20 == 0:
                connack, suback = self.new_client(port, i, during=lambda: one(first + count + i))
                slowest[2], slowest[3] = max(slowest[2], connack), max(slowest[3], suback)
        return slowest


class NatsStallTest(ClusterPair):
    """The frozen server of the module's docstring."""

    def node_type(self, name):
        if self._testMethodName == "test_frozen_nats_does_not_stall_local_clients":
            return LongDeadlineNode
        return StallNode

    def test_frozen_nats_does_not_stall_local_clients(self):
        a = self.nodes["a"]
        # b wants the flood's topic (and the probe's, for after the stall).
        flood_sub = self.flood_subscriber()
        after_sub = self.client("b", "after-sub")
        self.assertEqual(after_sub.subscribe([("after/x", 0)]), [0])
        # a's two local clients: nothing they do needs NATS.
        local_sub = self.client("a", "local-sub")
        self.assertEqual(local_sub.subscribe([("local/rt", 1)]), [1])
        local_pub = self.client("a", "local-pub")
        probe = self.client("a", "probe")
        self.crossing(probe, flood_sub, "flood/x", b"before")
        self.round_trips(local_pub, local_sub, 0, 2, None)
        flooder = self.stall(flood_sub)
        slowest = self.round_trips(local_pub, local_sub, 2, ROUNDS, None, port=a.port)
        sys.stderr.write("\nflood: %d MiB sent to a (blocked: %s); slowest local round trip QoS 0 %.3f s, "
                         "QoS 1 %.3f s; slowest new client's CONNACK %.3f s, SUBACK %.3f s\n"
                         % ((flooder.sent >> 20, flooder.blocked) + tuple(slowest)))
        self.assertFalse(flooder.blocked, "node a stopped reading its publisher while NATS was frozen")
        # QoS 0 is at most once: what could not go to NATS was dropped,
        # and counted, never silently.
        self.assertIsNotNone(a.wait_log("lost the NATS connection", timeout=WAIT),
                             "a never noticed that NATS stopped answering")
        status, body = a.wait_ready(False)
        self.assertEqual(status, 503, body)
        self.assertGreater(self.metric("a", "cluster_send_dropped_total"), 0)
        self.assertIsNotNone(a.wait_log("dropping QoS 0 messages for NATS", timeout=WAIT))
        # Still serving its clients once NATS is known lost, while cnats
        # tries to reconnect to the frozen server: round trips for
        # LOST_PHASE seconds (bounded in count too).
        # New clients connect and subscribe meanwhile.
        slowest = self.round_trips(local_pub, local_sub, 2 + ROUNDS, 20000, LOST_PHASE, port=a.port)
        sys.stderr.write("NATS lost: slowest local round trip QoS 0 %.3f s, QoS 1 %.3f s; slowest new client's "
                         "CONNACK %.3f s, SUBACK %.3f s\n" % tuple(slowest))

        offset = a.log_size()
        self.nats.proc.send_signal(signal.SIGCONT)
        self.assertIsNotNone(a.wait_log("connected to NATS as node 'a'", offset=offset, timeout=WAIT),
                             "a never reconnected after NATS resumed")
        status, body = a.wait_ready(True)
        self.assertEqual(status, 200, body)
        self.crossing(probe, after_sub, "after/x", b"after")
        self.round_trips(local_pub, local_sub, 0, 2, None)

    def test_node_stops_on_sigterm_while_nats_is_frozen(self):
        # The same stall; then SIGTERM must end a, exit status 0, within
        # WAIT (a hang is the failure: cnats's close alone may wait 5 s for
        # its threads, more than Broker.stop's bound leaves on a busy host).
        a = self.nodes["a"]
        flood_sub = self.flood_subscriber()
        probe = self.client("a", "probe")
        self.crossing(probe, flood_sub, "flood/x", b"before")
        self.stall(flood_sub)
        start = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        try:
            status = a.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.fail("node a did not exit within %ss of SIGTERM while NATS is frozen" % WAIT)
        a.exit_status = status
        self.assertEqual(status, 0, a.log_banner())
        self.assertIsNone(SANITIZER_RE.search(a.log()), a.log_banner())
        sys.stderr.write("\na stopped %.2f s after SIGTERM with NATS frozen\n" % (time.monotonic() - start))


class FrozenReconnectTest(ClusterPair):
    """Once both of a node's connections count as lost, cnats reconnects
    each to the frozen server: an attempt is accepted by the kernel and
    then waits for an INFO that never comes, holding the connection's lock.
    Before cluster/link.h the loop still made the claim of every new client
    (and the shared groups' queue SUBs and UNSUBs, handover messages, its
    look at the connection's status for every message another node wanted)
    on '<node>-share' under that lock: each new client stopped every client
    of the node until the attempt ended. A CONNECT whose session another
    node holds now waits for the connection (its request is sent once it is
    back) up to cluster.handover_timeout, holding only itself."""

    def node_type(self, name):
        return FrozenReconnectNode

    def test_reconnecting_to_a_frozen_server_does_not_stall_local_clients(self):
        a, b = self.nodes["a"], self.nodes["b"]
        local_sub = self.client("a", "local-sub")
        self.assertEqual(local_sub.subscribe([("local/rt", 1)]), [1])
        local_pub = self.client("a", "local-pub")
        leaver = self.client("a", "leaver")
        self.assertEqual(leaver.subscribe([("$share/g1/grp/#", 0)]), [0])
        # A persistent session at b that a knows b holds.
        mover = RawClient(b.port)
        self.clients.append(mover)
        self.assertEqual(mover.connect("mover", clean=False), 0)
        self.assertIsNotNone(a.wait_log("client mover: last claimed by node 'b'", timeout=WAIT), a.log_banner())
        mover.send(DISCONNECT_PKT)
        self.assertTrue(mover.wait_closed())
        self.round_trips(local_pub, local_sub, 0, 2, None)

        offset = a.log_size()
        self.nats.proc.send_signal(signal.SIGSTOP)
        for what in (r"lost the NATS connection:", r"lost the NATS connection 'a-share'"):
            self.assertIsNotNone(a.wait_log(what, offset=offset, timeout=WAIT),
                                 "a never noticed that NATS stopped answering (%s)" % what)
        # cnats now reconnects both, each attempt 30 s against the frozen
        # server: round trips with a new client (its claim) every 20th;
        # then a CONNECT for b's session (its request), a group left (its
        # queue UNSUB) and a new one made (its SUB), and round trips again.
        slowest = self.round_trips(local_pub, local_sub, 2, 20000, LOST_PHASE / 2, port=a.port)
        mover = RawClient(a.port, timeout=WAIT)
        self.clients.append(mover)
        mover.send(connect_pkt("mover", clean=False))
        self.assertIsNotNone(a.wait_log("client mover: asking node [0-9a-f]+ for its session once the NATS "
                                        "connection is back", offset=offset, timeout=WAIT), a.log_banner())
        leaver.unsubscribe(["$share/g1/grp/#"])
        member = self.client("a", "member")
        self.assertEqual(member.subscribe([("$share/g2/grp/#", 0)]), [0])
        later = self.round_trips(local_pub, local_sub, 20000, 20000, LOST_PHASE / 2, port=a.port)
        # Its request never went out: it starts afresh at the timeout.
        ack = mover.expect(CONNACK, timeout=WAIT)
        self.assertEqual(ack.body, b"\x00\x00", "CONNACK: Session Present 0, accepted")
        sys.stderr.write("\nreconnecting to a frozen NATS: slowest local round trip QoS 0 %.3f s, QoS 1 %.3f s; "
                         "slowest new client's CONNACK %.3f s, SUBACK %.3f s\n"
                         % tuple(max(x, y) for x, y in zip(slowest, later)))

        offset = a.log_size()
        self.nats.proc.send_signal(signal.SIGCONT)
        self.assertIsNotNone(a.wait_log("the NATS connection 'a-share' is back", offset=offset, timeout=WAIT),
                             "a's share connection never came back after NATS resumed")
        # The group made while it was down has its queue SUB now: what b
        # publishes reaches a's member (b has none; NATS picks a).
        pub = self.client("b", "group-pub")
        self.crossing(pub, member, "grp/x", b"group")


class PendingLimitTest(ClusterPair):
    """cnats's queue per subscription holds at most cluster.inbound_queue
    messages; what it drops past that is counted and logged, never
    silent."""

    def node_type(self, name):
        return SlowDeliveryNode if name == "b" else StallNode

    def test_messages_cnats_drops_past_its_pending_limit_are_counted(self):
        b = self.nodes["b"]
        sub = self.client("b", "slow-sub")
        self.assertEqual(sub.subscribe([("slow/#", 0)]), [0])
        probe = self.client("a", "probe")
        self.crossing(probe, sub, "slow/x", b"before")
        self.assertEqual(self.metric("b", "cluster_pending_dropped_total"), 0)
        pub = self.client("a", "slow-pub")
        # 2,000 messages at 2 ms each on b's delivery thread: far more than
        # 16 wait in cnats at once.
        pub.send(b"".join(publish_pkt("slow/x", b"m%d" % i) for i in range(2000)))
        pub.ping(timeout=WAIT)  # a has read them all
        self.assertIsNotNone(b.wait_log("NATS's client is dropping messages from NATS", timeout=WAIT), b.log_banner())
        deadline = time.monotonic() + WAIT
        while self.metric("b", "cluster_pending_dropped_total") == 0:
            self.assertLess(time.monotonic(), deadline, "cnats's drops never counted")
            time.sleep(0.05)
        dropped = self.metric("b", "cluster_pending_dropped_total")
        self.assertLessEqual(dropped, 2000)
        sys.stderr.write("\ncnats dropped %d of 2000 on b (inbound_queue 16)\n" % dropped)


if __name__ == "__main__":
    main()
