#!/usr/bin/python3
# ctest: TIMEOUT 240
"""32 cluster rejoin (issue 16: "a NATS server restart or a node restart
heals without operator action"). libnats gives a connection up for good
once a server refused it twice in a row (credentials unknown or revoked);
the node then makes it anew on its own, 1 s doubling to 30 s. What a user
sees, with a real nats-server whose configuration file the test rewrites
and reloads (SIGHUP):

- a node started while nats-server refuses its credentials serves its local
  clients, says once why it is alone (/readyz 503), and joins without a
  restart once the server's configuration lets it in: a message published
  on another node reaches its subscriber, and its log says it rejoined;
- a node accepted, then revoked (nats-server closes its connections with an
  authorization error) and later restored, acknowledges QoS 1 messages
  meanwhile (store and forward) and rejoins, and they all reach the other
  node's subscriber, in order.

nats-server must be installed (WISP_NATS_SERVER): a missing one fails the
test, never skips it."""

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import main  # noqa: E402
from wisp_cluster import SELECTIVE, ClusterCase, Node, load_script  # noqa: E402

NatsConf = load_script("cluster30", "30_cluster_nats_auth.py").NatsConf

WAIT = 20.0  # seconds any awaited cluster event may take (a rejoin waits up to 4 s here)
CLOSED = "NATS closed the connection 'a(-share)?' for good"
PASSWORDS = {"a": "pw-a-6d1f", "b": "pw-b-2e9c"}


class ClusterRejoinTest(ClusterCase):
    # Each test starts nats-server with the users it wants (serve_nats).
    start_nats_in_setup = False
    wait = WAIT

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="wisp-e2e32-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, True)

    def users(self, names):
        return ["users: [%s]" % ", ".join("{user: %s, password: %s}" % (n, json.dumps(PASSWORDS[n]))
                                          for n in names)]

    def serve_nats(self, users):
        # Not ClusterCase.start_nats: that would remove nats-server's log
        # before a failed test's cleanup shows it (the class removes it).
        self.nats = NatsConf(self.work, auth=self.users(users))
        self.addCleanup(self.nats.kill)
        self.nats.start()

    def reload_nats(self, users):
        """Rewrites the authorization block and has nats-server reload it
        (SIGHUP, as `nats-server --signal reload`)."""
        with open(self.nats.conf) as f:
            text = f.read()
        text = re.sub(r"(?s)authorization \{.*?\n\}\n", "authorization {\n  %s\n}\n" % self.users(users)[0], text)
        with open(self.nats.conf, "w") as f:
            f.write(text)
        before = self.nats.log().count("Reloaded server configuration")
        self.nats.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + WAIT
        while self.nats.log().count("Reloaded server configuration") == before:
            self.assertLess(time.monotonic(), deadline, "nats-server did not reload its configuration")
            time.sleep(0.05)

    def make_node(self, name, persistence=None):
        n = Node(name, self.nats.port, persistence=bool(persistence))
        n.extra_config["cluster"].update(interest_interval=1, username=name, password=PASSWORDS[name])
        return n

    def launch(self, name, persistence=False):
        """Starts node name without waiting for NATS (it may refuse it)."""
        n = self.nodes[name] = self.make_node(name, persistence)
        n.start()
        return n

    def join(self, name, persistence=False):
        n = self.launch(name, persistence)
        for line, what in (("connected to NATS as node '%s'" % name, "never connected to NATS"),
                           ("JetStream ready", "JetStream never ready"),
                           (SELECTIVE, "never heard the cluster")):
            self.assertIsNotNone(n.wait_log(line, timeout=WAIT), "node %s %s" % (name, what))
        return n

    def wait_auth_errors(self, user, count):
        """Until nats-server has refused `user` count times: the node's
        connections were each tried again (each makes two tries before
        libnats gives it up, and a rejoin makes them anew)."""
        deadline = time.monotonic() + WAIT
        pattern = 'authentication error - User "%s"' % user
        while self.nats.log().count(pattern) < count:
            self.assertLess(time.monotonic(), deadline, "nats-server refused %s fewer than %d times" % (user, count))
            time.sleep(0.05)

    def assert_serves_local(self, name, tag):
        sub = self.client(name, "local-sub-" + tag)
        self.assertEqual(sub.subscribe([("local/" + tag, 1)]), [1])
        self.client(name, "local-pub-" + tag).publish("local/" + tag, b"here", qos=1, pid=1)
        self.assertEqual(sub.recv_publish(timeout=WAIT).payload, b"here")

    def test_node_refused_at_start_joins_once_the_server_accepts_it(self):
        self.serve_nats(["b"])
        self.join("b")
        a = self.launch("a", persistence=True)
        line = a.wait_log("refused node 'a'", timeout=WAIT)
        self.assertIsNotNone(line, "node a did not say NATS refused it")
        self.assertIn("Authorization Violation", line)
        self.assertIn("serving local clients only", line)
        self.assertIn("connecting again on its own", line)
        self.assert_serves_local("a", "alone")
        status, body = a.get("/readyz")
        self.assertEqual((status, body), (503, "cluster: not connected to NATS\n"))
        # 7 refusals at start (the core connection's first try, then two
        # tries of each of the three connections): more is a new attempt.
        self.wait_auth_errors("a", 10)
        self.assertNotIn(PASSWORDS["a"], a.log())
        offset = a.log_size()
        self.reload_nats(["a", "b"])
        self.assertIsNotNone(a.wait_log("node 'a' rejoined the cluster over NATS", offset=offset, timeout=WAIT),
                             "node a did not rejoin once nats-server accepted it")
        self.assertIsNotNone(a.wait_log("JetStream ready", offset=offset, timeout=WAIT))
        self.assertIsNotNone(a.wait_log(SELECTIVE, offset=offset, timeout=WAIT))
        self.assertEqual(a.wait_ready(True), (200, "ready\n"))
        # Said once for the whole episode, however many tries it took.
        log = a.log()
        self.assertEqual(log.count("refused node 'a'"), 1, log)
        self.assertEqual(len(re.findall(CLOSED, log)), 0, log)
        self.assertLessEqual(log.count("NATS closed the JetStream connection 'a-js' for good"), 1, log)
        # A message published on the other node reaches a's subscriber.
        sub = self.client("a", "sub-a")
        self.assertEqual(sub.subscribe([("x/+", 1)]), [1])
        self.client("b", "pub-b").publish("x/1", b"across", qos=1, pid=1)
        p = sub.recv_publish(timeout=WAIT)
        self.assertEqual((p.topic, p.payload, p.qos), ("x/1", b"across", 1))

    def test_node_revoked_then_restored_rejoins_and_forwards_what_it_acked_meanwhile(self):
        self.serve_nats(["a", "b"])
        a = self.join("a", persistence=True)
        self.join("b")
        sub = self.client("b", "sub-b")
        self.assertEqual(sub.subscribe([("s/+", 1)]), [1])
        pub = self.client("a", "pub-a")
        pub.publish("s/1", b"m0", qos=1, pid=1)
        self.assertEqual(sub.recv_publish(timeout=WAIT).payload, b"m0")
        offset = a.log_size()
        self.reload_nats(["b"])
        # Once for the node (whichever of its two connections libnats gave
        # up first), once for the JetStream worker's.
        for line in (CLOSED, "NATS closed the JetStream connection 'a-js' for good"):
            got = a.wait_log(line, offset=offset, timeout=WAIT)
            self.assertIsNotNone(got, "node a did not say: " + line)
            self.assertIn("Authorization Violation", got)
        self.assertEqual(a.wait_ready(False)[0], 503)
        # Acknowledged while alone: kept in the store (forwarding queue).
        payloads = [b"m%d" % i for i in range(1, 6)]
        for i, payload in enumerate(payloads, 2):
            pub.publish("s/1", payload, qos=1, pid=i)
        self.assert_serves_local("a", "revoked")
        self.wait_auth_errors("a", 6)  # tried again while revoked
        offset = a.log_size()
        self.reload_nats(["a", "b"])
        for line in ("node 'a' rejoined the cluster over NATS", "the JetStream connection 'a-js' is back",
                     "forwarding queue drained"):
            self.assertIsNotNone(a.wait_log(line, offset=offset, timeout=WAIT), "node a did not say: " + line)
        rejoins = re.search(r"(?m)^wisp_cluster_nats_rejoins_total ([0-9]+)$", a.get("/metrics")[1])
        self.assertEqual(rejoins and int(rejoins.group(1)), 1, "the rejoin counted in $SYS/broker/cluster/nats/rejoins")
        got = [sub.recv_publish(timeout=WAIT).payload for _ in payloads]
        self.assertEqual(got, payloads)
        sub.assert_no_packet(wait=0.3)
        self.assertEqual(a.wait_ready(True), (200, "ready\n"))
        log = a.log()
        self.assertEqual(len(re.findall(CLOSED, log)), 1, log)


if __name__ == "__main__":
    main()
