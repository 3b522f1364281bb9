#!/usr/bin/python3
# ctest: TIMEOUT 240
"""38 cluster dormant node: a node that is down keeps its persistent
sessions' QoS 1/2 messages (issue 16). With interest-based publishing a
node sends a QoS 1/2 message to the JetStream stream only when another
node's announced filters match it, and it forgets a node's filters at its
"bye" (SIGTERM) or after three silent intervals (kill -9). But the stopped
node's sessions are in its store and its durable consumer on the stream
would keep every message for them: while such a node is dormant (its
consumer listed on the stream, the node not heard), every QoS 1/2 message
goes to the stream ("when in doubt, send"; docs/cluster.md).

Two nodes with their stores, beating every second; a persistent session
"keep" subscribed to rs/# (QoS 2) on b:
  1. b stopped with SIGTERM; QoS 1 and QoS 2 published at a and
     acknowledged; b restarted: "keep" gets every message, QoS 2 once
     [MQTT-4.3.3-2] (a said b is dormant, counted in
     $SYS/broker/cluster/interest/dormant, and that it is back);
  2. the same with b killed (kill -9) and a having forgotten b's interest
     (three silent intervals) before the publishes;
  3. a restarted while b is down (a never heard b in its run): the same;
  4. a shared group whose only member is a persistent session on b: its
     consumer on the stream keeps them too, the member gets them;
  5. b's consumer deleted through the JetStream API (how an operator takes
     a node out for good): a leaves doubt (gauge 0, logged) and QoS 1/2 no
     node wants are acknowledged without the stream again
     (cluster/messages/unwanted counts them).

nats-server must be installed (WISP_NATS_SERVER): a missing one fails the
test, never skips it."""

import json
import os
import re
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_cluster import ClusterCase, InterestNode  # noqa: E402
from wisp_e2e import RawClient, main  # noqa: E402

WAIT = 20.0  # seconds an awaited cluster event may take (JetStream set-up included)
DORMANT = "node 'b' is down but its stream consumer remains"
FORGOTTEN = "node 'b' unheard for 3 s: its interest is forgotten"
STREAM = "WISP"


class DormantNodeTest(ClusterCase):
    node_class = InterestNode
    node_names = ("a", "b")
    persistent = ("a", "b")
    settle = True
    wait = WAIT

    def setUp(self):
        super().setUp()
        # The persistent session on b, its filter announced to a (the
        # SUBACK waits for a's answer).
        c = self.raw("b", "keep")
        self.assertEqual(c.subscribe([("rs/#", 2)]), [2])
        c.close()
        self.assertIsNotNone(self.nodes["b"].wait_log("client keep .*disconnected", timeout=WAIT))

    def raw(self, node, client_id, clean=False):
        c = RawClient(self.nodes[node].port)
        self.clients.append(c)
        self.assertEqual(c.connect(client_id, clean=clean), 0)
        return c

    def metric(self, node, name):
        body = self.nodes[node].get("/metrics")[1]
        m = re.search(r"(?m)^wisp_%s (\d+)$" % name, body)
        return int(m.group(1)) if m else None

    def wait_metric(self, node, name, want):
        deadline = time.monotonic() + WAIT
        while self.metric(node, name) != want:
            if time.monotonic() > deadline:
                self.fail("node %s: %s is %s, never %s" % (node, name, self.metric(node, name), want))
            time.sleep(0.05)

    def stop(self, name, sig):
        n = self.nodes[name]
        if sig == signal.SIGTERM:
            n.stop()  # exit status 0, no sanitizer report
        else:
            n.proc.kill()
            n.proc.wait(timeout=10)
            n.exit_status = -9

    def start_again(self, name, settled=True):
        n = self.nodes[name]
        n.exit_status = None
        offset = n.log_size()
        self.start_node(name, offset=offset, settled=settled)
        return offset

    def a_forgot_b(self):
        """Waits until a no longer counts b's filter: a QoS 0 message on
        rs/ goes unwanted (QoS 0 stays selective while b is dormant)."""
        pub = self.raw("a", "probe0", clean=True)
        before = self.metric("a", "cluster_unwanted_total")
        deadline = time.monotonic() + WAIT
        for i in range(2000):
            pub.publish("rs/probe", b"q0 %d" % i, qos=0)
            pub.ping()
            if self.metric("a", "cluster_unwanted_total") > before:
                break
            if time.monotonic() > deadline:
                self.fail("a never forgot b's interest")
            time.sleep(0.05)
        pub.close()

    def publish_at_a(self):
        """Three QoS 1 and three QoS 2 messages on rs/x, each acknowledged."""
        pub = self.raw("a", "pub-a", clean=True)
        sent = []
        for i in range(6):
            qos = 1 if i % 2 == 0 else 2
            payload = b"q%d-%d" % (qos, i)
            pub.publish("rs/x", payload, qos=qos, pid=i + 1)
            sent.append(payload)
        pub.close()
        return sent

    def expect_kept(self, sent):
        """b is back: "keep" (Clean Start 0) gets every message, once."""
        back = self.raw("b", "keep")
        self.assertTrue(back.session_present, "keep's session is in b's store [MQTT-3.2.2-2]")
        got = []
        try:
            for _ in sent:
                got.append(back.recv_publish(timeout=WAIT).payload)
        except AssertionError as e:
            self.fail("keep got %r of %r (%s)" % (got, sent, e))
        self.assertEqual(got, sent)
        back.assert_no_packet(wait=0.5)  # QoS 2 once [MQTT-4.3.3-2]

    def test_sigterm_then_restart(self):
        off_a = self.nodes["a"].log_size()
        self.stop("b", signal.SIGTERM)
        self.a_forgot_b()
        sent = self.publish_at_a()
        off_b = self.start_again("b")
        self.expect_kept(sent)
        self.assertNotIn("node 'a' is down", self.nodes["b"].log_since(off_b), "a live node is not dormant")
        a = self.nodes["a"]
        self.assertIsNotNone(a.wait_log(DORMANT, offset=off_a, timeout=WAIT))
        self.assertIsNotNone(a.wait_log("node 'b' is no longer dormant: it is heard again", offset=off_a,
                                        timeout=WAIT))
        self.assertEqual(len(re.findall(DORMANT, a.log_since(off_a))), 1, "logged once")
        self.wait_metric("a", "cluster_interest_dormant", 0)

    def test_kill_forgotten_then_restart(self):
        off_a = self.nodes["a"].log_size()
        self.stop("b", signal.SIGKILL)
        self.assertIsNotNone(self.nodes["a"].wait_log(FORGOTTEN, offset=off_a, timeout=WAIT))
        sent = self.publish_at_a()
        self.start_again("b")
        self.expect_kept(sent)
        self.assertIsNotNone(self.nodes["a"].wait_log(DORMANT, offset=off_a, timeout=WAIT))

    def test_publisher_node_restarted_while_down(self):
        self.stop("b", signal.SIGTERM)
        self.stop("a", signal.SIGTERM)
        off_a = self.start_again("a")  # alone: it never heard b in this run
        sent = self.publish_at_a()
        self.start_again("b")
        self.expect_kept(sent)
        self.assertIsNotNone(self.nodes["a"].wait_log(DORMANT, offset=off_a, timeout=WAIT))

    def test_shared_group_all_on_dormant_node(self):
        """A shared group whose only member (persistent) is on b: its
        consumer on the stream keeps what a acknowledged meanwhile."""
        gm = self.raw("b", "gm")
        self.assertEqual(gm.subscribe([("$share/g/sh/#", 1)]), [1])
        gm.close()
        self.assertIsNotNone(self.nodes["b"].wait_log("client gm .*disconnected", timeout=WAIT))
        self.stop("b", signal.SIGTERM)
        self.a_forgot_b()
        pub = self.raw("a", "pub-sh", clean=True)
        for i in range(3):
            pub.publish("sh/x", b"g%d" % i, qos=1, pid=i + 1)
        pub.close()
        self.start_again("b")
        back = self.raw("b", "gm")
        self.assertTrue(back.session_present)
        got = sorted(back.recv_publish(timeout=WAIT).payload for _ in range(3))
        self.assertEqual(got, [b"g0", b"g1", b"g2"])

    def test_deleted_consumer_ends_doubt(self):
        a = self.nodes["a"]
        off_a = a.log_size()
        self.stop("b", signal.SIGTERM)
        self.assertIsNotNone(a.wait_log(DORMANT, offset=off_a, timeout=WAIT))
        self.wait_metric("a", "cluster_interest_dormant", 1)
        unwanted = self.metric("a", "cluster_unwanted_total")
        self.publish_at_a()
        self.assertEqual(self.metric("a", "cluster_unwanted_total"), unwanted, "sent to the stream while dormant")
        self.assertTrue(self.delete_consumer("b"))
        self.assertIsNotNone(a.wait_log("node 'b' is no longer dormant: its stream consumer is gone", offset=off_a,
                                        timeout=WAIT))
        self.wait_metric("a", "cluster_interest_dormant", 0)
        pub = self.raw("a", "pub-after", clean=True)
        pub.publish("rs/x", b"nobody", qos=1, pid=1)
        self.assertEqual(self.metric("a", "cluster_unwanted_total"), unwanted + 1, "not sent: no node wants it")

    def delete_consumer(self, consumer):
        """$JS.API.CONSUMER.DELETE.<stream>.<consumer> over a raw NATS
        connection (what `nats consumer rm` sends); True on success."""
        s = socket.create_connection(("127.0.0.1", self.nats.port), timeout=WAIT)
        try:
            f = s.makefile("rb")
            f.readline()  # INFO
            subject = "$JS.API.CONSUMER.DELETE.%s.%s" % (STREAM, consumer)
            s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.dormant 1\r\n'
                      b"PUB %s _INBOX.dormant 0\r\n\r\n" % subject.encode())
            for _ in range(100):
                line = f.readline()
                if not line:
                    return False
                if line.startswith(b"PING"):
                    s.sendall(b"PONG\r\n")
                elif line.startswith(b"MSG "):
                    size = int(line.split()[-1])
                    body = json.loads(f.read(size + 2)[:size])
                    return body.get("success") is True
            return False
        finally:
            s.close()


if __name__ == "__main__":
    main()
