#!/usr/bin/python3
# ctest: TIMEOUT 240
"""48 cluster data connection (issue 16: the per-message cost of the NATS
hop). A node publishes what crosses at most once (QoS 0) on a NATS
connection of its own, '<node>-pub', that its loop thread writes
(broker/src/cluster/nats_writer.h), not through cnats. What a user sees,
and nats-server's own monitoring confirms (its /connz counts each
connection's messages):

- a burst of QoS 0 messages from a client of node a reaches a subscriber
  on node b, all of them, in order, and every one went to NATS on a-pub;
- nats-server restarted: the data connection is made again on its own,
  the node says so in its log, and messages cross on it again;
- a server that does not answer the CONNECT's PING within
  cluster.connect_timeout (a TCP relay that holds what the data connection
  writes after its CONNECT) is given up, said in the log, and the
  connection is made once the server answers;
- with "data_connection": false there is no such connection and messages
  cross through cnats as before;
- the node's filters are subscribed on that connection, and its loop reads
  what they bring: nats-server lists the SUBs on b-pub, not on b; and a
  node whose own subscriber wants what it sends another node does not hear
  its own message back (before, each came back on its main connection and
  was counted in cluster/messages/dropped: 100 of 100).

nats-server must be installed (WISP_NATS_SERVER): a missing one fails the
test, never skips it."""

import json
import os
import queue
import re
import socket
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import main  # noqa: E402
from wisp_cluster import SELECTIVE, ClusterCase, InterestNode, shutdown_both  # noqa: E402

WAIT = 20.0  # seconds any awaited cluster event may take
BURST = 2000  # QoS 0 messages of the burst
UP = "NATS data connection up"


class DataConnectionTest(ClusterCase):
    node_class = InterestNode
    node_names = ("a", "b")
    settle = True
    wait = WAIT

    def wait_up(self, name, offset=0):
        line = self.nodes[name].wait_log(UP, offset=offset, timeout=WAIT)
        self.assertIsNotNone(line, "node %s: its data connection never came up" % name)
        return line

    def burst(self, topic, n, first=0):
        """n QoS 0 messages from a client of a to one of b, in order."""
        sub = self.client("b", "sub-%s-%d" % (topic, first))
        self.assertEqual(sub.subscribe([(topic, 0)]), [0])
        self.assertIsNotNone(self.nodes["a"].wait_log(SELECTIVE, timeout=WAIT))
        # b's new filter is known at a once a sends it there: a probe
        # published until one arrives (interest announcements are beats).
        pub = self.client("a", "pub-%s-%d" % (topic, first))
        for _ in range(int(WAIT / 0.2)):
            pub.publish(topic, b"probe")
            try:
                if sub.recv_publish(timeout=0.2).payload == b"probe":
                    break
            except Exception:
                continue
        else:
            self.fail("b's filter %s never reached a" % topic)
        # Whatever other probes were still on their way.
        while True:
            try:
                sub.recv_publish(timeout=0.5)
            except Exception:
                break
        for i in range(first, first + n):
            pub.publish(topic, b"%d" % i)
        got = [int(sub.recv_publish(timeout=WAIT).payload) for _ in range(n)]
        self.assertEqual(got, list(range(first, first + n)))

    def test_a_burst_crosses_on_the_data_connection_in_order(self):
        for name in self.node_names:
            line = self.wait_up(name)
            self.assertIn("max_payload 1048576", line)
        self.burst("d/1", 10)  # the filter known at a
        before = self.nats.in_msgs("a-pub")
        self.assertIsNotNone(before, "no NATS connection named a-pub")
        self.burst("d/1", BURST, first=10)
        # Exactly the burst (and the probes of its own burst() call) went
        # on a-pub: every message, none through cnats's connection "a".
        self.assertGreaterEqual(self.nats.in_msgs("a-pub") - before, BURST)
        self.assertLess(self.nats.in_msgs("a-pub") - before, BURST + int(WAIT / 0.2) + 1)

    def subjects_of(self, conn_name):
        """The subscriptions nats-server lists for the connection named so."""
        url = "http://127.0.0.1:%d/connz?subs=1" % self.nats.mport
        with urllib.request.urlopen(url, timeout=10) as r:
            conns = json.load(r).get("connections", [])
        return {s for c in conns if c.get("name") == conn_name for s in c.get("subscriptions_list") or []}

    def metric(self, node, name):
        m = re.search(r"(?m)^wisp_%s ([0-9]+)$" % name, self.nodes[node].get("/metrics")[1])
        self.assertIsNotNone(m, "no wisp_%s on node %s" % (name, node))
        return int(m.group(1))

    def test_filters_are_read_on_the_data_connection_and_own_messages_stay_home(self):
        self.wait_up("a")
        self.wait_up("b")
        home = self.client("a", "own-home")
        self.assertEqual(home.subscribe([("own/#", 0)]), [0])
        self.burst("own/t", 20)
        # b's filter is a SUB of b-pub's (its "own/#" parent too), none of
        # b's main connection.
        self.assertIn("wisp.own.t", self.subjects_of("b-pub"))
        self.assertNotIn("wisp.own.t", self.subjects_of("b"))
        self.assertIn("wisp.own.>", self.subjects_of("a-pub"))
        self.assertNotIn("wisp.own.>", self.subjects_of("a"))
        # The burst's 20 and its probes reached a's own subscriber as well;
        # a heard none of them back from NATS.
        got = 0
        while True:
            try:
                home.recv_publish(timeout=0.5)
                got += 1
            except Exception:
                break
        self.assertGreaterEqual(got, 20)
        self.assertEqual(self.metric("a", "cluster_dropped_total"), 0)
        self.assertEqual(self.metric("a", "cluster_received_total"), 0)
        self.assertGreaterEqual(self.metric("b", "cluster_received_total"), 20)
        # Started together, each node's filters moved to its data
        # connection with the fence: cnats listened for it in time.
        for name in ("a", "b"):
            self.assertNotIn("without the fence", self.nodes[name].log())

    def test_nats_restart_makes_it_again(self):
        self.wait_up("a")
        offset = self.nodes["a"].log_size()
        self.nats.stop()
        self.assertIsNotNone(self.nodes["a"].wait_log("NATS data connection lost at", offset=offset, timeout=WAIT),
                             "a did not say its data connection was lost")
        self.nats.start()
        self.wait_up("a", offset)
        self.wait_up("b", offset)
        self.burst("r/1", 200)
        self.assertGreaterEqual(self.nats.in_msgs("a-pub"), 200)


class PubHold:
    """A TCP relay to nats-server that passes every connection through but
    one whose CONNECT names `name`: while holding, what that one writes
    after its CONNECT line is read and thrown away (its CONNECT's PING,
    its PINGs), so nats-server never answers it; what the server sends
    passes. Released, new connections pass whole.

    With lag_name, what the server sends the connection whose CONNECT names
    lag_name reaches it `lag` seconds late, in order, from the moment
    `lagging` is set: a NATS route or server that lags on that connection
    only."""

    def __init__(self, target_port, name, lag_name=None, lag=0.0):
        self.target = target_port
        self.name = name
        self.lag_name, self.lag = lag_name, lag
        self.lagging = threading.Event()
        self.holding = threading.Event()
        self.holding.set()
        self.held = 0  # connections held so far
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                down, _ = self.lsock.accept()
                up = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                return
            up.settimeout(None)
            self.socks += [down, up]
            named = {}  # the CONNECT's name, once the node sent it
            threading.Thread(target=self._pump, args=(up, down, False, named), daemon=True).start()
            threading.Thread(target=self._pump, args=(down, up, True, named), daemon=True).start()

    def _late(self, chunks, dst):
        try:
            while True:
                due, data = chunks.get()
                if data is None:
                    break
                time.sleep(max(0.0, due - time.monotonic()))
                dst.sendall(data)
        except OSError:
            pass

    def _pump(self, src, dst, from_node, named):
        head = b""
        hold = False
        late = None  # the queue of chunks lagging behind, once lagging
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not from_node and late is None and self.lagging.is_set() and named.get("name") == self.lag_name:
                    late = queue.Queue()
                    threading.Thread(target=self._late, args=(late, dst), daemon=True).start()
                if late is not None:
                    late.put((time.monotonic() + self.lag, data))
                    continue
                if from_node and head is not None:
                    head += data
                    if b"\r\n" not in head:
                        continue
                    line, _, rest = head.partition(b"\r\n")
                    head = None
                    found = re.search(rb'"name":"([^"]*)"', line)
                    named["name"] = found.group(1).decode() if found else None
                    hold = self.holding.is_set() and b'"name":"%s"' % self.name.encode() in line
                    self.held += hold
                    data = line + b"\r\n" + rest
                    if hold:
                        dst.sendall(line + b"\r\n")
                        continue
                if not hold:
                    dst.sendall(data)
        except OSError:
            pass
        if late is not None:
            late.put((0.0, None))
            return  # _late delivers what is left; the node's side ends the pair
        shutdown_both(src, dst)

    def close(self):
        self.lsock.close()
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass


class StalledHelloTest(ClusterCase):
    """The data connection's CONNECT is passed on but its PING is not:
    nats-server never answers it (cnats's connections pass)."""

    node_class = InterestNode
    node_names = ()

    def test_unanswered_connect_is_given_up_then_made_again(self):
        relay = PubHold(self.nats.port, "a-pub")
        self.addCleanup(relay.close)
        a = self.make_node("a")
        a.extra_config["cluster"]["nats"] = ["nats://127.0.0.1:%d" % relay.port]
        a.extra_config["cluster"]["connect_timeout"] = 1
        self.nodes["a"] = a
        a.start()
        self.assertIsNotNone(a.wait_log("connected to NATS as node 'a'", timeout=WAIT))
        line = a.wait_log("NATS data connection not made to 127.0.0.1:%d: no answer within "
                          r"cluster.connect_timeout \(1 s\)" % relay.port, timeout=WAIT)
        self.assertIsNotNone(line, "a did not give up a data connection whose CONNECT was never answered")
        self.assertNotIn(UP, a.log())
        self.assertGreaterEqual(relay.held, 1)
        relay.holding.clear()
        self.assertIsNotNone(a.wait_log(UP, timeout=WAIT), "the data connection was never made once answered")
        self.assertIsNotNone(self.nats.in_msgs("a-pub"), "no NATS connection named a-pub")


class SlowCnatsNode(InterestNode):
    """A node whose cnats delivery thread takes 2 ms a message (debug
    builds: WISP_DEBUG_SLOW_NATS_DELIVERY): a backlog waits in cnats when
    its filters move to the data connection."""

    def _env(self):
        return dict(super()._env(), WISP_DEBUG_SLOW_NATS_DELIVERY="1")


class NativePublisher:
    """A plain NATS client (no Wisp headers) publishing "n<i>" on subject
    every 20 ms from its own thread until stopped, then waiting for the
    server's PONG, so nats-server has them all; bounded in count."""

    def __init__(self, nats, subject, most=2000):
        self.sock = socket.create_connection((nats.host, nats.port), timeout=WAIT)
        self.file = self.sock.makefile("rb")
        if not self.file.readline().startswith(b"INFO "):
            raise AssertionError("nats-server sent no INFO")
        self.sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
        self.subject, self.most, self.sent = subject.encode(), most, 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stopping.is_set() and self.sent < self.most:
            p = b"n%d" % self.sent
            self.sock.sendall(b"PUB %s %d\r\n%s\r\n" % (self.subject, len(p), p))
            self.sent += 1
            time.sleep(0.02)

    def stop(self):
        self.stopping.set()
        self.thread.join()
        self.sock.sendall(b"PING\r\n")
        for _ in range(10):  # PONG, after the odd PING of the server's own
            line = self.file.readline()
            if not line or line.startswith(b"PONG"):
                break
        if line != b"PONG\r\n":
            raise AssertionError("nats-server did not answer PING: %r" % line)

    def close(self):
        self.stopping.set()
        self.sock.close()


class HeldMoveCase(ClusterCase):
    """Nodes a and b, b made by b_class with its data connection held by a
    PubHold relay (start_b_held), so its filters move when the test
    releases it."""

    node_class = InterestNode
    node_names = ()
    settle = True
    b_class = InterestNode
    lag_main = 0.0  # seconds b's main connection lags from the release on

    def make_node(self, name, persistence=None):
        if name == "b":
            return self.b_class(name, self.nats.port, persistence=False)
        return super().make_node(name, persistence)

    def start_b_held(self):
        """Starts a, then b with b-pub held: the relay and b, once b says
        its data connection was not made."""
        relay = PubHold(self.nats.port, "b-pub", lag_name="b", lag=self.lag_main)
        self.addCleanup(relay.close)
        self.start_node("a")
        b = self.make_node("b")
        b.extra_config["cluster"]["nats"] = ["nats://127.0.0.1:%d" % relay.port]
        b.extra_config["cluster"]["connect_timeout"] = 1
        self.nodes["b"] = b
        b.start()
        self.assertIsNotNone(b.wait_log("connected to NATS as node 'b'", timeout=WAIT))
        self.assertIsNotNone(b.wait_log("NATS data connection not made", timeout=WAIT))
        return relay, b


class SwitchTest(HeldMoveCase):
    """b's data connection is held unanswered, so b reads its filters
    through cnats; released while a publishes a numbered stream to b's
    subscriber (and a plain NATS client publishes on a subject the same
    filter matches), b's filters move to b-pub: subscribed there, then the
    fence (a message both of b's connections hear at one point of their
    streams) decides which connection brings which message. Every number
    arrives exactly once and in order ([MQTT-4.6.0-6]: one publisher's
    messages in the order published), also what waited in cnats's queue at
    the move (b's cnats delivery is slowed so that some always does), and
    so does every plain NATS message. Before the fence, cnats's subscriptions
    stayed 10 s and both brought every message: the plain ones, which have
    no numbering, came twice, and a message through cnats could come after
    a later one through b-pub."""

    b_class = SlowCnatsNode
    prefix = "wisp."  # cluster.subject_prefix, with its dot

    def join_group(self):
        """Nothing here; EmptyPrefixSwitchTest adds a shared group."""

    def test_filters_move_to_the_data_connection_losing_repeating_and_reordering_nothing(self):
        relay, b = self.start_b_held()
        filter_subject = self.prefix + "sw.>"
        sub = self.client("b", "switch-sub")
        self.assertEqual(sub.subscribe([("sw/#", 0)]), [0])
        self.assertIn(filter_subject, DataConnectionTest.subjects_of(self, "b"))
        self.join_group()
        pub = self.client("a", "switch-pub")
        self.assertIsNotNone(self.nodes["a"].wait_log(SELECTIVE, timeout=WAIT))
        native = NativePublisher(self.nats, self.prefix + "sw.native")
        self.addCleanup(native.close)
        got, got_native = [], []
        stop = threading.Event()

        def receive():
            while not stop.is_set():
                try:
                    p = sub.recv_publish(timeout=0.2).payload
                except Exception:  # noqa: BLE001 - nothing this moment
                    continue
                if p.startswith(b"n"):
                    got_native.append(int(p[1:]))
                else:
                    got.append(int(p))

        reader = threading.Thread(target=receive, daemon=True)
        reader.start()
        native.thread.start()
        # A numbered stream, about 650 a second for 6 s, and the plain one
        # at 50 a second: b's slowed cnats delivery (500 a second) falls
        # behind by 200 a second, up to about 2 s of its work when b-pub
        # comes up (its attempt held at the release runs out its 1 s
        # connect_timeout, then up to 2 s of backoff), well within the 4 s
        # the fence is waited for. The hold is released a quarter of the
        # way in; bounded in count and time.
        n, released = 4000, False
        deadline = time.monotonic() + 60
        for i in range(n):
            pub.publish("sw/t", b"%d" % i)
            if i % 20 == 19:
                time.sleep(0.03)
            if i == n // 4:
                relay.lagging.set()
                relay.holding.clear()
                released = True
            self.assertLess(time.monotonic(), deadline, "the stream took too long")
        self.assertTrue(released)
        native.stop()
        self.assertIsNotNone(b.wait_log(UP, timeout=WAIT), "b's data connection never came up")
        pub.ping(timeout=WAIT)
        until = time.monotonic() + WAIT
        while (len(got) < n or len(got_native) < native.sent) and time.monotonic() < until:
            time.sleep(0.05)
        time.sleep(0.5)  # any repeat still on its way
        stop.set()
        reader.join()
        self.assertNotIn("without the fence", b.log())
        missing = sorted(set(range(n)) - set(got))
        self.assertEqual(missing, [], "lost across the move\n" + b.log())
        self.assertEqual(len(got), n, "repeated across the move: %d extra" % (len(got) - n))
        late = [(got[i - 1], got[i]) for i in range(1, n) if got[i] < got[i - 1]]
        self.assertEqual(late, [], "out of order across the move")
        self.assertGreater(native.sent, 100)
        self.assertEqual(sorted(set(range(native.sent)) - set(got_native)), [], "plain NATS messages lost")
        self.assertEqual(len(got_native), native.sent,
                         "plain NATS messages repeated: %d extra" % (len(got_native) - native.sent))
        # The filter moved: on b-pub, and off b's main connection (at the
        # fence, not 10 s later); both listen for the fence.
        self.assertIn(filter_subject, DataConnectionTest.subjects_of(self, "b-pub"))
        fence = [s for s in DataConnectionTest.subjects_of(self, "b") if s.startswith("$WISP.%sfence." % self.prefix)]
        self.assertEqual(len(fence), 1, DataConnectionTest.subjects_of(self, "b"))
        self.assertIn(fence[0], DataConnectionTest.subjects_of(self, "b-pub"))
        until = time.monotonic() + WAIT
        while filter_subject in DataConnectionTest.subjects_of(self, "b"):
            self.assertLess(time.monotonic(), until, "b's cnats subscription outlived the move")
            time.sleep(0.2)


class EmptyPrefixSwitchTest(SwitchTest):
    """The same move with "subject_prefix": "" and a shared group '#' on
    b: its queue subscription on b-share ('>') also matches the fence's
    subject ($WISP.fence.<run>), and b-share hears b's own fence at once,
    while what nats-server sends b's main connection arrives a second late
    (the relay lags it from the release on; cnats's delivery is not slowed
    here: b-share's messages would wait behind it in cnats's one delivery
    thread). Only the copy that b's main connection's fence subscription
    brought may count as cnats's: taken for it, the group's copy would end
    cnats's filters with that second of messages still on its way, lost."""

    prefix = ""
    b_class = InterestNode
    lag_main = 1.0

    def make_node(self, name, persistence=None):
        node = super().make_node(name, persistence)
        node.extra_config["cluster"]["subject_prefix"] = ""
        return node

    def join_group(self):
        member = self.client("b", "switch-group")
        self.assertEqual(member.subscribe([("$share/g/#", 0)]), [0])
        self.assertIn(">", DataConnectionTest.subjects_of(self, "b-share"))
        stop = threading.Event()

        def drain():  # the group gets the whole stream too; read and dropped
            while not stop.is_set():
                try:
                    member.recv_publish(timeout=0.2)
                except Exception:  # noqa: BLE001 - nothing this moment
                    continue

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        self.addCleanup(reader.join)
        self.addCleanup(stop.set)


class NoFenceNode(InterestNode):
    """A node that never publishes the move's fence (debug builds:
    WISP_DEBUG_NO_FENCE), as when its '<node>-share' connection is down."""

    def _env(self):
        return dict(super()._env(), WISP_DEBUG_NO_FENCE="1")


class NoFenceTest(HeldMoveCase):
    """Without the fence the move waits for it at most 5 s, cnats bringing
    every message meanwhile (the data connection's copies dropped), then
    goes on as before the fence existed: logged, cnats's subscriptions kept
    10 s while both connections bring every message, each number routed
    once."""

    b_class = NoFenceNode

    def test_the_move_goes_on_without_it(self):
        relay, b = self.start_b_held()
        sub = self.client("b", "nofence-sub")
        self.assertEqual(sub.subscribe([("nf/#", 0)]), [0])
        pub = self.client("a", "nofence-pub")
        self.assertIsNotNone(self.nodes["a"].wait_log(SELECTIVE, timeout=WAIT))
        offset = b.log_size()
        relay.holding.clear()
        self.assertIsNotNone(b.wait_log(UP, offset=offset, timeout=WAIT))
        # A numbered stream of about 250 a second for 10 s: before the wait
        # ends, through it and into the 10 s both connections bring it.
        got = []
        n = 2500
        deadline = time.monotonic() + 60
        skipped = None
        for i in range(n):
            pub.publish("nf/t", b"%d" % i)
            if i % 25 == 24:
                time.sleep(0.1)
                while True:
                    try:
                        got.append(int(sub.recv_publish(timeout=0).payload))
                    except Exception:  # noqa: BLE001 - nothing waiting now
                        break
            if skipped is None and "without the fence" in b.log()[offset:]:
                skipped = i
                # Kept on cnats for 10 s more: on b's main connection too.
                self.assertIn("wisp.nf.>", DataConnectionTest.subjects_of(self, "b"))
            self.assertLess(time.monotonic(), deadline, "the stream took too long")
        self.assertIsNotNone(skipped, "the move never went on without the fence\n" + b.log())
        self.assertGreater(skipped, 0, "the move did not wait for the fence")
        self.assertIn("the filters move to the data connection without the fence (it did not come through either "
                      "connection within 5 s)", b.log())
        pub.ping(timeout=WAIT)
        until = time.monotonic() + WAIT
        while len(got) < n and time.monotonic() < until:
            try:
                got.append(int(sub.recv_publish(timeout=0.2).payload))
            except Exception:  # noqa: BLE001 - nothing this moment
                pass
        sub.assert_no_packet(wait=0.5)
        self.assertEqual(sorted(set(range(n)) - set(got)), [], "lost around the move")
        self.assertEqual(len(got), n, "repeated around the move: %d extra" % (len(got) - n))
        until = time.monotonic() + 10 + WAIT
        while "wisp.nf.>" in DataConnectionTest.subjects_of(self, "b"):
            self.assertLess(time.monotonic(), until, "b's cnats subscription outlived its 10 s")
            time.sleep(0.2)


class DataConnectionOffTest(ClusterCase):
    node_class = InterestNode
    node_names = ()
    settle = True

    def make_node(self, name, persistence=None):
        n = super().make_node(name, persistence)
        n.extra_config["cluster"]["data_connection"] = False
        return n

    def test_off_messages_cross_through_cnats(self):
        for name in ("a", "b"):
            self.start_node(name)
        DataConnectionTest.burst(self, "o/1", 100)
        self.assertIsNone(self.nats.in_msgs("a-pub"), "a data connection was made though it is off")
        self.assertNotIn(UP, self.nodes["a"].log())
        self.assertGreaterEqual(self.nats.in_msgs("a"), 100)


if __name__ == "__main__":
    main()
