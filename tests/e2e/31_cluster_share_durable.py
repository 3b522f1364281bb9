#!/usr/bin/python3
# ctest: TIMEOUT 300
"""31 cluster shared subscriptions, durable: a `$share/g/f` group with
members on several nodes loses no acknowledged QoS 1/2 message (issue 16:
"Shared subscriptions are one group cluster-wide: one delivery per message
per group"; "Killing any one node with kill -9 loses no acknowledged message
for subscribers on the other nodes; QoS 2 stays exactly once").

Three Wisp nodes and one nats-server -js on loopback; a publishes, the
group's members are on b and c (and a). What a user sees:
  - every acknowledged QoS 1 message reaches the group exactly once, the
    members on several nodes sharing them; QoS 2 likewise, and a filter
    ending in "/#" takes its parent level too [MQTT-4.7.1-2];
  - b frozen (SIGSTOP) while it holds deliveries of the group it has not
    acknowledged to JetStream, then killed (kill -9): every QoS 1 and 2
    message a's publisher got a PUBACK / PUBREC for reaches the member on
    c, once;
  - a new group's SUBACK waits for its consumer, so a message published
    right after it is the group's;
  - NATS restarted while a keeps the group's QoS 2 messages in its store:
    the group gets each once when NATS is back.
  - nats-server loses its last writes (the stream's message files removed
    while it is down, its consumers' state kept): the group's consumer,
    ahead of the stream, is made again, and the messages published after
    NATS is back, on the sequences it had delivered, reach the group once.

nats-server must be installed (WISP_NATS_SERVER): a missing one fails the
test, never skips it."""

import json
import os
import signal
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import IO_TIMEOUT, main  # noqa: E402
from wisp_cluster import ClusterCase, Node as ClusterNode  # noqa: E402

WAIT = 20.0  # seconds any awaited cluster event may take
# The group consumers' ack wait (cluster.group_ack_wait) where a test waits
# for a redelivery: shorter than the default 30 s, long enough for a loaded
# member node's ack.
ACK_WAIT = 10


class Node(ClusterNode):
    """A node that learns the others' interest within a second or two."""

    delay_group_bind = False
    persist_a = False  # node a keeps QoS 1/2 messages in its store while NATS is down
    group_ack_wait = None  # cluster.group_ack_wait, the same on every node (None: the default)

    def __init__(self, name, nats_port, persistence=False):
        super().__init__(name, nats_port, persistence=persistence or (name == "a" and self.persist_a))

    def config(self):
        cfg = super().config()
        cfg["cluster"]["interest_interval"] = 1
        if self.group_ack_wait:
            cfg["cluster"]["group_ack_wait"] = self.group_ack_wait
        return cfg

    def _env(self):
        # Debug builds bind a new group's JetStream consumer half a second
        # late: a SUBACK that did not wait for it would let a message
        # published right after it be stored before the consumer exists.
        env = super()._env()
        return dict(env, WISP_DEBUG_DELAY_GROUP_BIND="1") if self.delay_group_bind else env


class ShareDurableTest(ClusterCase):
    node_class = Node
    node_names = ("a", "b", "c")
    WAITS_FOR_REDELIVERY = {"test_member_node_frozen_then_killed_loses_nothing_acknowledged"}

    def setUp(self):
        Node.delay_group_bind = self._testMethodName == "test_new_group_gets_a_qos1_message_published_right_after_its_suback"
        Node.persist_a = self._testMethodName == "test_nats_restarted_group_gets_what_was_acknowledged_meanwhile_once"
        Node.group_ack_wait = ACK_WAIT if self._testMethodName in self.WAITS_FOR_REDELIVERY else None
        super().setUp()
        for name, n in self.nodes.items():
            self.assertIsNotNone(n.wait_log("JetStream ready: QoS 1/2 cross nodes", timeout=WAIT),
                                 "node %s: JetStream never ready" % name)

    def consumers(self):
        """The WISP stream's consumers: name -> nats-server's detail."""
        url = "http://127.0.0.1:%d/jsz?consumers=true&config=true" % self.nats.mport
        with urllib.request.urlopen(url, timeout=IO_TIMEOUT) as r:
            data = json.load(r)
        out = {}
        for acc in data.get("account_details") or []:
            for st in acc.get("stream_detail") or []:
                if st.get("name") == "WISP":
                    for c in st.get("consumer_detail") or []:
                        out[c["name"]] = c
        return out

    def group_consumers(self):
        return {n: c for n, c in self.consumers().items() if n.startswith("wisp-share-")}

    def collect(self, clients, count, timeout=WAIT):
        """PUBLISHes from any of clients until count arrived (or timeout
        passed): [(client index, topic, payload)]."""
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            for i, c in enumerate(clients):
                try:
                    p = c.recv_publish(timeout=0.05)
                except (AssertionError, OSError):
                    continue  # nothing from this one within the slice
                got.append((i, p.topic, p.payload))
        return got

    def members(self, nodes, share, qos):
        out = []
        for n in nodes:
            m = self.client(n, "member-" + n)
            self.assertEqual(m.subscribe([(share, qos)]), [qos])
            out.append(m)
        return out

    def test_group_across_nodes_gets_each_acknowledged_qos1_message_once(self):
        members = self.members(("a", "b", "c"), "$share/g/q1/+", 1)
        # One consumer for the group, bound by every node (a deliver group).
        groups = self.group_consumers()
        self.assertEqual(len(groups), 1, sorted(groups))
        name, consumer = next(iter(groups.items()))
        self.assertEqual(consumer["config"].get("filter_subject"), "WISP.q1.*")
        self.assertEqual(consumer["config"].get("deliver_group"), name)
        pub = self.client("a", "pub-a")
        count = 300
        for i in range(count):
            pub.publish("q1/%d" % (i % 7), b"m%d" % i, qos=1, pid=i % 60000 + 1)  # each waits for its PUBACK
        got = self.collect(members, count)
        payloads = sorted(p for _, _, p in got)
        self.assertEqual(payloads, sorted(b"m%d" % i for i in range(count)),
                         "each acknowledged message once for the group")
        self.assertGreaterEqual(len({i for i, _, _ in got}), 2, "the members on several nodes shared them")
        for m in members:
            m.assert_no_packet(wait=0.5)  # no second copy of any
        # They came through the group's consumer, each delivered once.
        consumer = self.group_consumers()[name]
        self.assertEqual((consumer["delivered"]["consumer_seq"], consumer["num_redelivered"]), (count, 0))

    def test_group_gets_each_qos2_message_once_and_hash_takes_the_parent_level(self):
        members = self.members(("a", "b", "c"), "$share/g2/q2/#", 2)
        names = sorted(self.group_consumers())
        self.assertEqual(len(names), 2, names)  # q2.> and its parent level q2
        self.assertEqual(names[1], names[0] + "-p")
        pub = self.client("a", "pub-a")
        count = 60
        for i in range(count):
            topic = "q2" if i % 10 == 0 else "q2/%d" % (i % 5)
            pub.publish(topic, b"x%d" % i, qos=2, pid=i + 1)
        got = self.collect(members, count)
        self.assertEqual(sorted(p for _, _, p in got), sorted(b"x%d" % i for i in range(count)),
                         "each QoS 2 message once for the group [MQTT-4.3.3-2]")
        self.assertIn("q2", {t for _, t, _ in got})
        for m in members:
            m.assert_no_packet(wait=0.5)

    def test_new_group_gets_a_qos1_message_published_right_after_its_suback(self):
        # A new group's consumer delivers what is stored from its creation
        # on: the member's SUBACK waits until it is made and bound, so a
        # message published anywhere right after it is the group's.
        member = self.client("b", "member-b")
        pub = self.client("a", "pub-a")
        rounds = 15
        for i in range(rounds):
            f = "$share/n%d/nw/+" % i
            self.assertEqual(member.subscribe([(f, 1)], pid=i + 1), [1])
            pub.publish("nw/%d" % i, b"n%d" % i, qos=1, pid=i + 1)
            p = member.recv_publish(timeout=WAIT)
            self.assertEqual((p.topic, p.payload), ("nw/%d" % i, b"n%d" % i))
            self.assertEqual(member.unsubscribe([f], pid=i + 1), None)
        self.assertEqual(len(self.group_consumers()), rounds)
        # Opened by the groups' marks, not by cluster.interest_ack_timeout.
        body = self.nodes["b"].get("/metrics")[1]
        self.assertRegex(body, r"(?m)^wisp_cluster_interest_ack_timeouts_total 0$")

    def test_nats_restarted_group_gets_what_was_acknowledged_meanwhile_once(self):
        members = self.members(("b", "c"), "$share/r/rs/+", 2)
        pub = self.client("a", "pub-a")
        for i in range(10):
            pub.publish("rs/%d" % (i % 3), b"r%d" % i, qos=2, pid=i + 1)
        self.assertEqual(len(self.collect(members, 10)), 10)
        a = self.nodes["a"]
        offset = a.log_size()
        # Stopped, not killed: a nats-server with one replica killed within
        # milliseconds of the group's acks forgets them and delivers r1-r9
        # again, to a member on either node (docs/cluster.md).
        self.nats.stop()
        self.assertIsNotNone(a.wait_log("JetStream out of reach: QoS 1/2 messages for other nodes are kept in the "
                                        "store", offset=offset, timeout=WAIT))
        # Acknowledged from a's store while NATS is down (PUBREC, PUBCOMP).
        for i in range(10, 30):
            pub.publish("rs/%d" % (i % 3), b"r%d" % i, qos=2, pid=i + 1)
        offset = a.log_size()
        self.nats.start()  # the same store: the stream and the groups' consumers come back
        self.assertIsNotNone(a.wait_log("forwarding queue drained", offset=offset, timeout=WAIT))
        got = self.collect(members, 20)
        self.assertEqual(sorted(p for _, _, p in got), sorted(b"r%d" % i for i in range(10, 30)),
                         "each message acknowledged while NATS was down once for the group [MQTT-4.3.3-2]")
        for m in members:
            m.assert_no_packet(wait=0.5)

    def test_group_consumer_ahead_of_a_stream_that_lost_its_last_writes_is_made_again(self):
        # Members on b alone: only b binds the group, so only b checks its
        # consumer (two nodes remaking it at once may give a message twice).
        members = self.members(("b",), "$share/lw/lw/+", 2)
        pub = self.client("a", "pub-a")
        for i in range(6):
            pub.publish("lw/%d" % (i % 3), b"w%d" % i, qos=2, pid=i + 1)
        self.assertEqual(len(self.collect(members, 6)), 6)
        b = self.nodes["b"]
        offset = b.log_size()
        self.nats.restart_losing_last_writes()
        self.assertIsNotNone(b.wait_log("1 shared groups' consumers on stream 'WISP' were ahead of it",
                                        offset=offset, timeout=WAIT), b.log_banner())
        for i in range(6, 12):
            pub.publish("lw/%d" % (i % 3), b"w%d" % i, qos=2, pid=i + 1)
        got = self.collect(members, 6)
        self.assertEqual(sorted(p for _, _, p in got), sorted(b"w%d" % i for i in range(6, 12)),
                         "each message published after NATS was back once for the group [MQTT-4.3.3-2]")
        members[0].assert_no_packet(wait=0.5)

    def wait_pending_at_b(self, received, count):
        """Until every message c has not got is delivered to frozen b and
        unacknowledged there (JetStream's ack-pending count says so); the
        number pending."""
        deadline = time.monotonic() + WAIT
        pending = None
        while time.monotonic() < deadline:
            received.extend(self.collect([self.c_member], count - len(received), timeout=0.2))
            pending = sum(c.get("num_ack_pending", 0) for c in self.group_consumers().values())
            if len(received) + pending == count:
                return pending
        self.fail("c got %d, %s pending, of %d" % (len(received), pending, count))

    def test_member_node_frozen_then_killed_loses_nothing_acknowledged(self):
        b_member, self.c_member = self.members(("b", "c"), "$share/k/kill/+", 2)
        pub = self.client("a", "pub-a")
        b = self.nodes["b"]
        b.proc.send_signal(signal.SIGSTOP)
        self.addCleanup(lambda: b.proc.poll() is None and b.proc.send_signal(signal.SIGCONT))
        count = 60
        for i in range(count):
            # QoS 1 and 2 in turn; PUBACK / PUBREC: acknowledged
            pub.publish("kill/%d" % (i % 3), b"k%d" % i, qos=1 + i % 2, pid=i + 1)
        received = []
        pending = self.wait_pending_at_b(received, count)
        # NATS's queue group handed frozen b its share: without them, c
        # would get everything and the test would prove nothing.
        self.assertGreater(pending, 0, "NATS gave frozen b none of the group's messages")
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait(timeout=10)
        b.exit_status = "killed by the test"
        # JetStream gives b's unacknowledged ones to c after the ack wait.
        received.extend(self.collect([self.c_member], count - len(received), timeout=ACK_WAIT + WAIT))
        payloads = sorted(p for _, _, p in received)
        missing = sorted(set(b"k%d" % i for i in range(count)) - set(payloads))
        if missing:  # the nodes' logs go with their cleanup: say what c saw here
            self.fail("%d acknowledged messages lost for the group, e.g. %s; its consumer: %s; c's log:\n%s" % (
                len(missing), missing[:5], json.dumps(
                    {n: {k: c.get(k) for k in ("delivered", "ack_floor", "num_ack_pending", "num_redelivered",
                                               "push_bound")} for n, c in self.group_consumers().items()}),
                "\n".join(line for line in self.nodes["c"].log().splitlines()[-200:] if "DEBUG" not in line)))
        self.assertEqual(payloads, sorted(b"k%d" % i for i in range(count)), "each once [MQTT-4.3.3-2]")
        self.c_member.assert_no_packet(wait=0.5)


if __name__ == "__main__":
    main()
