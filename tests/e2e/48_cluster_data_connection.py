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
  cross through cnats as before.

nats-server must be installed (WISP_NATS_SERVER): a missing one fails the
test, never skips it."""

import os
import socket
import sys
import threading

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
    passes. Released, new connections pass whole."""

    def __init__(self, target_port, name):
        self.target = target_port
        self.name = name
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
            threading.Thread(target=self._pump, args=(up, down, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(down, up, True), daemon=True).start()

    def _pump(self, src, dst, from_node):
        head = b""
        hold = False
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if from_node and head is not None:
                    head += data
                    if b"\r\n" not in head:
                        continue
                    line, _, rest = head.partition(b"\r\n")
                    head = None
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
