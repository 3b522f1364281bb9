#!/usr/bin/python3
# ctest: TIMEOUT 240 RUN_SERIAL ON
"""24 cluster: three Wisp nodes and one nats-server on loopback (issue 16,
first slice). A message published on one node reaches the subscribers on
the others exactly once, in order, with its v5 properties; a node gets from
NATS only what its own subscribers want (checked on nats-server's
monitoring endpoint: the NATS subscriptions each node holds and the
messages NATS sent it); unsubscribing stops the flow; a node that loses
NATS keeps serving its local clients and rejoins when NATS is back.

nats-server must be installed (WISP_NATS_SERVER, found by CMake): a
missing one fails the test, never skips it."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import IO_TIMEOUT, PUBACK, Broker, RawClient, free_port, main, publish_pkt  # noqa: E402
from v5_clients import paho5, paho5_stop, paho5_subscribe  # noqa: E402

NATS_BIN = os.environ.get("WISP_NATS_SERVER") or shutil.which("nats-server") or "/usr/sbin/nats-server"
PREFIX = "wisp"
WAIT = 10.0  # seconds any awaited cluster event may take
STOP_BOUND = 3.0  # seconds a node may take to exit on SIGTERM (cnats's close wait is 5)


class Nats:
    """nats-server with JetStream and a temporary store on loopback ports."""

    def __init__(self):
        if not os.path.exists(NATS_BIN):
            raise AssertionError("nats-server not found (%s): install the Debian package nats-server "
                                 "(scripts/deps.sh --test)" % NATS_BIN)
        self.dir = tempfile.mkdtemp(prefix="wisp-nats-")
        self.host = "127.0.0.1"
        self.port = free_port()
        self.mport = free_port()
        self.proc = None

    def command(self):
        return [NATS_BIN, "-a", self.host, "-p", str(self.port), "-m", str(self.mport), "-js", "-sd",
                os.path.join(self.dir, "js")]

    def start(self):
        log = open(os.path.join(self.dir, "nats.log"), "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("nats-server exited at start:\n" + self.log())
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                socket.create_connection(("127.0.0.1", self.mport), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nats-server did not listen within %ss:\n%s" % (WAIT, self.log()))

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def log(self):
        with open(os.path.join(self.dir, "nats.log"), errors="replace") as f:
            return f.read()

    def connections(self):
        """Node name -> (its NATS subscriptions, messages NATS sent it)."""
        url = "http://127.0.0.1:%d/connz?subs=1" % self.mport
        with urllib.request.urlopen(url, timeout=IO_TIMEOUT) as r:
            data = json.load(r)
        # _INBOX.*: replies to the node's JetStream requests and the
        # retained bucket's consumer (26_cluster_state tests those; the
        # client-id claims and shared groups are on <node>-share).
        return {c.get("name"): ({s for s in c.get("subscriptions_list") or [] if not s.startswith("_INBOX.")},
                                c["out_msgs"])
                for c in data.get("connections", [])}

    def wait_subjects(self, node, want, present=True):
        """Waits until node holds (or no longer holds) every subject of want."""
        deadline = time.monotonic() + WAIT
        subs = None
        while time.monotonic() < deadline:
            subs = self.connections().get(node, (set(), 0))[0]
            if (set(want) <= subs) if present else not (set(want) & subs):
                return subs
            time.sleep(0.05)
        raise AssertionError("node %s: NATS subscriptions %s, wanted %s%s" % (
            node, sorted(subs or []), "" if present else "none of ", sorted(want)))

    def out_msgs(self, node):
        return self.connections()[node][1]


class Node(Broker):
    """A cluster node: its MQTT listener plus an http listener for /readyz
    and /metrics."""

    def __init__(self, name, nats_port, persistence=False):
        cfg = {"cluster": {"nats": ["nats://127.0.0.1:%d" % nats_port], "node": name}}
        if not persistence:
            cfg["persistence"] = {"enabled": False}
        super().__init__(config=cfg)
        self.http_port = free_port()

    def config(self):
        cfg = super().config()
        cfg["listeners"].append({"bind": "127.0.0.1", "port": self.http_port, "protocol": "http"})
        return cfg

    def get(self, path):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.http_port, path), timeout=IO_TIMEOUT) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def wait_ready(self, ready):
        """Waits until /readyz says ready (or not); returns its last answer."""
        deadline = time.monotonic() + WAIT
        while True:
            status, body = self.get("/readyz")
            if (status == 200) == ready or time.monotonic() > deadline:
                return status, body
            time.sleep(0.05)


class ClusterTest(unittest.TestCase):

    def setUp(self):
        self.nats = Nats()
        # Cleanups run even when setUp fails half way (tearDown would not):
        # no nats-server or node outlives the test.
        self.addCleanup(shutil.rmtree, self.nats.dir, True)
        self.addCleanup(self.nats.kill)
        self.nats.start()
        self.nodes = {}
        self.clients = []
        self.addCleanup(self.stop_nodes)
        for name in ("a", "b", "c"):
            b = Node(name, self.nats.port)
            self.nodes[name] = b
            b.start()
        for name, b in self.nodes.items():
            self.assertIsNotNone(b.wait_log("connected to NATS as node '%s'" % name, timeout=WAIT),
                                 "node %s never connected to NATS" % name)

    def stop_nodes(self):
        for c in self.clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - cleanup must not hide the test result
                pass
        errors = []
        for b in self.nodes.values():
            try:
                b.stop()
            except AssertionError as e:
                errors.append(str(e))
            except Exception:  # noqa: BLE001 - a node that never started
                pass
        for b in self.nodes.values():
            b.cleanup()
        if errors:
            self.fail("\n".join(errors))

    def run(self, result=None):
        result = result if result is not None else self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        super().run(result)
        if len(result.failures) + len(result.errors) > before:
            for name, b in getattr(self, "nodes", {}).items():
                sys.stderr.write("\n--- node %s ---\n%s\n" % (name, b.log_banner()))
        return result

    def client(self, node, client_id):
        c = RawClient(self.nodes[node].port)
        self.clients.append(c)
        self.assertEqual(c.connect(client_id), 0)
        return c

    def expect_payloads(self, c, payloads):
        got = []
        for _ in payloads:
            p = c.recv_publish(timeout=WAIT)
            got.append((p.topic, p.payload))
        self.assertEqual(got, payloads)

    def test_fan_out_exactly_once_to_interested_nodes_only(self):
        sub_b = self.client("b", "sub-b")
        sub_c = self.client("c", "sub-c")
        # Overlapping filters on c: two NATS subscriptions, still one copy.
        self.assertEqual(sub_b.subscribe([("fan/+/x", 1)]), [1])
        self.assertEqual(sub_c.subscribe([("fan/#", 1), ("fan/+/x", 1)]), [1, 1])
        self.nats.wait_subjects("b", {PREFIX + ".fan.*.x"})
        self.nats.wait_subjects("c", {PREFIX + ".fan.>", PREFIX + ".fan", PREFIX + ".fan.*.x"})
        self.assertEqual(self.nats.connections()["a"][0], set(), "a has no subscriber: no NATS interest")
        # Its JetStream set-up over (the retained bucket), NATS sends a nothing.
        self.assertIsNotNone(self.nodes["a"].wait_log("in step with bucket", timeout=WAIT))
        a_before = self.nats.out_msgs("a")
        pub = self.client("a", "pub-a")
        for i in range(1, 4):
            pub.publish("fan/%d/x" % i, b"m%d" % i, qos=1, pid=i)
        want = [("fan/%d/x" % i, b"m%d" % i) for i in range(1, 4)]
        # In order and once each: a duplicate would come before the next one.
        self.expect_payloads(sub_b, want)
        self.expect_payloads(sub_c, want)
        sub_c.assert_no_packet(wait=0.3)  # no trailing copy of m3
        self.assertEqual(self.nats.out_msgs("a"), a_before, "NATS sent a (no subscribers) messages")

    def test_node_without_interest_gets_nothing_and_unsubscribe_stops_flow(self):
        sub_b = self.client("b", "sub-b")
        self.assertEqual(sub_b.subscribe([("u/1", 0), ("u/keep", 0)]), [0, 0])
        self.nats.wait_subjects("b", {PREFIX + ".u.1", PREFIX + ".u.keep"})
        sub_c = self.client("c", "sub-c")
        self.assertEqual(sub_c.subscribe([("elsewhere", 0)]), [0])
        self.nats.wait_subjects("c", {PREFIX + ".elsewhere"})
        c_before = self.nats.out_msgs("c")
        pub = self.client("a", "pub-a")
        pub.publish("u/1", b"one")
        self.expect_payloads(sub_b, [("u/1", b"one")])
        self.assertEqual(self.nats.out_msgs("c"), c_before, "c got a message none of its clients wants")
        sub_b.unsubscribe(["u/1"], pid=7)
        self.nats.wait_subjects("b", {PREFIX + ".u.1"}, present=False)
        b_before = self.nats.out_msgs("b")
        pub.publish("u/1", b"after unsubscribe")
        pub.publish("u/keep", b"marker")
        self.expect_payloads(sub_b, [("u/keep", b"marker")])
        self.assertEqual(self.nats.out_msgs("b"), b_before + 1, "NATS still sent b the unsubscribed topic")
        # The last local subscriber gone by disconnecting also withdraws interest.
        sub_b.close()
        self.nats.wait_subjects("b", {PREFIX + ".u.keep"}, present=False)

    def test_shared_subscription_members_on_another_node_get_the_message(self):
        # The group is a NATS queue subscription on b's second connection
        # (26_cluster_state tests the split): the member on b gets every
        # message published on a, and leaving the group withdraws interest.
        member = self.client("b", "member-b")
        self.assertEqual(member.subscribe([("$share/g/sh/+", 1)]), [1])
        self.nats.wait_subjects("b-share", {PREFIX + ".sh.*"})
        pub = self.client("a", "pub-a")
        pub.publish("sh/1", b"shared", qos=1, pid=1)
        self.expect_payloads(member, [("sh/1", b"shared")])
        member.unsubscribe(["$share/g/sh/+"], pid=2)
        self.nats.wait_subjects("b-share", {PREFIX + ".sh.*"}, present=False)

    def test_restarted_node_resubscribes_for_its_stored_sessions(self):
        # A node with persistence restores its offline sessions at start-up,
        # before the cluster starts: their filters are interest too.
        d = Node("d", self.nats.port, persistence=True)
        self.nodes["d"] = d
        d.start()
        self.assertIsNotNone(d.wait_log("connected to NATS as node 'd'", timeout=WAIT))
        keep = RawClient(d.port)
        self.assertEqual(keep.connect("keep", clean=False), 0)
        self.assertEqual(keep.subscribe([("rs/t", 1)]), [1])
        keep.close()
        self.nats.wait_subjects("d", {PREFIX + ".rs.t"})
        d.stop()
        d.exit_status = None
        offset = d.log_size()
        d.start()
        self.assertIsNotNone(d.wait_log("connected to NATS as node 'd'", offset=offset, timeout=WAIT))
        self.nats.wait_subjects("d", {PREFIX + ".rs.t"})
        pub = self.client("a", "pub-a")
        pub.publish("rs/t", b"queued", qos=1, pid=1)
        back = RawClient(d.port)
        self.clients.append(back)
        self.assertEqual(back.connect("keep", clean=False), 0)
        self.expect_payloads(back, [("rs/t", b"queued")])

    def test_node_with_subscribed_client_stops_promptly(self):
        # cnats's nats_CloseAndWait waits (5 s) for every connection still
        # held: a node must release all of them before it, JetStream
        # worker's included. The bound is generous for a loaded machine.
        sub = self.client("a", "stop-sub")
        self.assertEqual(sub.subscribe([("st/#", 1)]), [1])
        self.nats.wait_subjects("a", {PREFIX + ".st.>"})
        pub = self.client("a", "stop-pub")
        pub.publish("st/t", b"x", qos=1, pid=1)  # its PUBACK: the stream stored it
        self.expect_payloads(sub, [("st/t", b"x")])
        began = time.monotonic()
        self.nodes["a"].stop()  # returns on the process's exit; asserts no leak
        took = time.monotonic() - began
        self.assertLess(took, STOP_BOUND, "node a took %.1fs to stop on SIGTERM" % took)

    def test_node_started_while_nats_is_down_serves_then_joins(self):
        # Every NATS connection a node opens (main, -share, -js) retries in
        # the background: the loop answers at once and SIGTERM is honoured.
        self.nats.kill()
        down = Node("down", self.nats.port)
        self.nodes["down"] = down
        down.start()  # returns once it accepts connections
        d = Node("d", self.nats.port)
        self.nodes["d"] = d
        d.start()
        self.assertIsNotNone(d.wait_log("joining the cluster", timeout=WAIT))
        local = self.client("d", "local-d")
        self.assertEqual(local.subscribe([("dn/t", 1)]), [1])
        pub = self.client("d", "pub-d")
        pub.send(publish_pkt("dn/t", b"local", qos=1, pid=7))
        p = local.recv_publish(timeout=WAIT)
        self.assertEqual((p.topic, p.payload, p.qos), ("dn/t", b"local", 1))
        down.stop()  # exits on SIGTERM while NATS is still away; no leak
        offset = d.log_size()
        self.nats.start()
        self.assertIsNotNone(d.wait_log("connected to NATS as node 'd'", offset=offset, timeout=WAIT),
                             "node d did not join when NATS came")
        # The held PUBACK goes once JetStream has the message (docs/cluster.md).
        ack = pub.expect(PUBACK, timeout=WAIT)
        self.assertEqual(ack.pid, 7)
        for name in ("a", "b", "c"):
            self.assertIsNotNone(self.nodes[name].wait_log("connected to NATS as node '%s'" % name,
                                                           offset=0, timeout=WAIT))
        remote = self.client("b", "remote-b")
        self.assertEqual(remote.subscribe([("dn/t", 1)]), [1])
        self.nats.wait_subjects("b", {PREFIX + ".dn.t"})
        pub.publish("dn/t", b"across", qos=1, pid=8)
        # "local" was in the stream before remote-b subscribed, but node b's
        # consumer may read it only after the SUBACK: it then reaches remote-b
        # too (docs/cluster.md, "QoS 1 and 2"). "across" must come, and last.
        first = remote.recv_publish(timeout=WAIT)
        if first.payload == b"local":
            first = remote.recv_publish(timeout=WAIT)
        self.assertEqual((first.topic, first.payload), ("dn/t", b"across"))
        self.expect_payloads(local, [("dn/t", b"across")])

    def test_v5_properties_and_escaped_topics_cross_nodes(self):
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        sub = paho5(self.nodes["c"].port, "v5-sub")
        pub = paho5(self.nodes["a"].port, "v5-pub")
        try:
            self.assertEqual(paho5_subscribe(sub, "v5/+/t", qos=1), [1])
            self.nats.wait_subjects("c", {PREFIX + ".v5.*.t"})
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("k", "v"), ("k", "second")]
            props.ContentType = "text/plain"
            props.CorrelationData = b"\x00\x01"
            props.MessageExpiryInterval = 3600
            # A level with a space and a dot: NATS refuses the first, and
            # nats-server's mapping writes the second as '//'.
            pub.publish("v5/a b.c/t", b"payload", qos=1, properties=props)
            msg = sub.received.get(timeout=WAIT)
            self.assertEqual(msg.topic, "v5/a b.c/t")
            self.assertEqual(msg.payload, b"payload")
            self.assertEqual(msg.qos, 1)
            self.assertEqual(msg.properties.UserProperty, [("k", "v"), ("k", "second")])
            self.assertEqual(msg.properties.ContentType, "text/plain")
            self.assertEqual(msg.properties.CorrelationData, b"\x00\x01")
            self.assertTrue(0 < msg.properties.MessageExpiryInterval <= 3600)
        finally:
            paho5_stop(pub)
            paho5_stop(sub)

    def test_nats_loss_is_survived_and_healed(self):
        local = self.client("a", "local-a")
        remote = self.client("b", "remote-b")
        self.assertEqual(local.subscribe([("f/t", 0)]), [0])
        self.assertEqual(remote.subscribe([("f/t", 0)]), [0])
        self.nats.wait_subjects("b", {PREFIX + ".f.t"})
        pub = self.client("a", "pub-a")
        pub.publish("f/t", b"before")
        self.expect_payloads(local, [("f/t", b"before")])
        self.expect_payloads(remote, [("f/t", b"before")])
        offsets = {n: b.log_size() for n, b in self.nodes.items()}
        self.nats.kill()
        for name in ("a", "b"):
            self.assertIsNotNone(self.nodes[name].wait_log("lost the NATS connection", offset=offsets[name],
                                                           timeout=WAIT), "node %s did not notice" % name)
        # Not ready for new clients, and says why; the gauge says it too.
        status, body = self.nodes["a"].wait_ready(False)
        self.assertEqual((status, body), (503, "cluster: not connected to NATS\n"))
        self.assertRegex(self.nodes["a"].get("/metrics")[1], r"(?m)^wisp_cluster_connected 0$")
        # Local delivery goes on without NATS.
        pub.publish("f/t", b"during")
        self.expect_payloads(local, [("f/t", b"during")])
        offsets = {n: b.log_size() for n, b in self.nodes.items()}
        self.nats.start()
        for name, b in self.nodes.items():
            self.assertIsNotNone(b.wait_log("connected to NATS as node '%s'" % name, offset=offsets[name],
                                            timeout=WAIT), "node %s did not reconnect" % name)
        self.nats.wait_subjects("b", {PREFIX + ".f.t"})
        self.assertEqual(self.nodes["a"].wait_ready(True), (200, "ready\n"))
        self.assertRegex(self.nodes["a"].get("/metrics")[1], r"(?m)^wisp_cluster_connected 1$")
        pub.publish("f/t", b"after")
        self.expect_payloads(local, [("f/t", b"after")])
        # "during" may still reach b (cnats buffers while reconnecting):
        # at most once, and before "after".
        got = [remote.recv_publish(timeout=WAIT).payload]
        if got[0] == b"during":
            got.append(remote.recv_publish(timeout=WAIT).payload)
        self.assertEqual(got[-1], b"after", got)
        remote.assert_no_packet(wait=0.3)


if __name__ == "__main__":
    main()
