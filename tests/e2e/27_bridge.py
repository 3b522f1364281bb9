#!/usr/bin/python3
# ctest: TIMEOUT 300
"""27 bridge: Wisp bridged to a real Debian Mosquitto on loopback (issue 17).

Both directions at QoS 0, 1 and 2; the remote stopped for 10 s under QoS 1
load and started again (every message Wisp acknowledged arrives, in
order); Wisp killed with kill -9 while the uplink is down (the queue
survives in the store and drains after the restart); a configuration that
would echo forever (the same topic in and out) does not; the bridge's
state in $SYS; a bridge whose name does not resolve (its name server
hanging, through the slowdns shim, tests/support/slowdns.c, WISP_SLOWDNS)
stalls no client, and the failure is logged and retried.

mosquitto must be installed (/usr/sbin/mosquitto): a missing one fails the
test, never skips it."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import re
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (IO_TIMEOUT, Broker, Closed, RawClient,  # noqa: E402
                      client_tls_context, free_port, main, make_certs, refused_port, run_wisp,
                      wisp_binary)

MOSQUITTO = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")
WAIT = 15.0  # seconds a bridge event (connect, drain) may take


def stop_and_clean(broker):
    """Cleanup for a Broker a test leaves running (a failed assertion, or a
    test that checks its state and ends): stopped as any other test's broker
    is (SIGTERM, exit status 0, no sanitizer report), never left behind: a
    bridge left running keeps dialling its remote's old port every few
    seconds, where another test's listener may be by then."""
    try:
        broker.stop()
    finally:
        if broker.proc is not None and broker.proc.poll() is None:
            broker.proc.kill()
            broker.proc.wait(timeout=10)
        broker.cleanup()


class Remote:
    """A Mosquitto on a loopback port, with persistence, so a subscriber's
    queued messages outlive a stop and start (SIGTERM: Mosquitto saves)."""

    def __init__(self, extra=None):
        if not os.path.exists(MOSQUITTO):
            raise AssertionError("mosquitto not installed at %s" % MOSQUITTO)
        self.dir = tempfile.mkdtemp(prefix="wisp-bridge-remote-")
        self.port = free_port()
        self.extra = list(extra or [])  # more mosquitto.conf lines for the listener (TLS)
        self.proc = None
        self.log_path = os.path.join(self.dir, "mosquitto.log")

    def start(self):
        conf = os.path.join(self.dir, "mosquitto.conf")
        lines = ["listener %d 127.0.0.1" % self.port, "allow_anonymous true",
                 "persistence true", "persistence_location %s/" % self.dir,
                 "log_dest stderr", "log_type all", "max_queued_messages 100000"] + self.extra
        if os.geteuid() == 0:
            lines.append("user root")
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", conf], stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=subprocess.STDOUT)
        logf.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise AssertionError("mosquitto did not start:\n%s" % self.log())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-6000:]
        except OSError:
            return ""

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def probe_in(remote_pub, topic, payload, local_sub, qos=1):
    """Publishes `topic` on the remote until the local subscriber gets a
    copy (the bridge's SUBSCRIBE has reached the remote); that copy."""
    deadline = time.monotonic() + WAIT
    while True:
        remote_pub.publish(topic, payload, qos=qos)
        try:
            return local_sub.recv_publish(timeout=0.5)
        except AssertionError:
            if time.monotonic() > deadline:
                raise


def bridge_config(remote, topics, version="mqttv311", **extra):
    br = {"name": "up", "addresses": ["127.0.0.1:%d" % remote.port], "protocol_version": version,
          "client_id": "gateway-1", "keepalive": 10, "reconnect_min": 1, "reconnect_max": 2,
          "topics": topics}
    br.update(extra)
    return {"bridges": [br]}


class MetricsBroker(Broker):
    """Wisp with an http listener too, for /metrics."""

    def config(self):
        cfg = super().config()
        self.http_port = free_port()
        cfg["listeners"].append({"bind": "127.0.0.1", "port": self.http_port, "protocol": "http"})
        return cfg

    def metrics(self):
        deadline = time.monotonic() + WAIT
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % self.http_port, timeout=5) as r:
                    return r.read().decode()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


class BridgeTest(unittest.TestCase):
    def setUp(self):
        self.remote = Remote()
        self.addCleanup(self.remote.cleanup)
        self.remote.start()
        self.wisp = None

    def start_wisp(self, cfg, limits=None):
        self.wisp = Broker(config=cfg, limits=limits)
        self.addCleanup(stop_and_clean, self.wisp)
        self.wisp.start()
        self.wait_connected()
        return self.wisp

    def wait_connected(self, offset=0):
        self.assertIsNotNone(self.wisp.wait_log(r"bridge up: connected to", offset=offset, timeout=WAIT),
                             "the bridge did not connect\n%s" % self.wisp.log()[-4000:])

    def remote_client(self, client_id, filters, clean=True):
        c = RawClient(self.remote.port)
        self.addCleanup(c.close)
        self.assertEqual(c.connect(client_id, clean=clean), 0)
        if filters:
            c.subscribe(filters)
        return c

    def local_client(self, client_id, filters=None):
        c = RawClient(self.wisp.port)
        self.addCleanup(c.close)
        self.assertEqual(c.connect(client_id), 0)
        if filters:
            c.subscribe(filters)
        return c

    def sys_values(self, client, want, timeout=WAIT):
        """$SYS/broker/bridges/up/* values, read until want(values) holds."""
        values = {}
        deadline = time.monotonic() + timeout
        while not want(values):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("$SYS bridge values never matched: %r" % values)
            try:
                got = client.recv_publish(timeout=left)
            except AssertionError:
                continue
            values[got.topic[len("$SYS/broker/bridges/up/"):]] = got.payload.decode()
        return values

    def collect(self, client, count, timeout=WAIT * 4, order=None):
        """Integer payloads until `count` distinct ones arrived (counting
        those already in `order`): their first-seen order."""
        order = list(order or [])
        seen = set(order)
        deadline = time.monotonic() + timeout
        while len(seen) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%d of %d messages arrived; missing: %s"
                                     % (len(seen), count, sorted(set(range(count)) - seen)[:20]))
            try:
                got = client.recv_publish(timeout=left)
            except (AssertionError, Closed) as e:
                raise AssertionError("%d of %d messages arrived (%s); missing: %s"
                                     % (len(seen), count, e, sorted(set(range(count)) - seen)[:20])) from None
            n = int(got.payload)
            if n not in seen:
                seen.add(n)
                order.append(n)
        return order

    def test_remote_restart_under_qos1_load(self):
        """The remote stops (SIGTERM: Mosquitto saves its sessions) for 10 s
        while a local publisher keeps sending QoS 1; every message Wisp
        acknowledged reaches the remote subscriber, in order."""
        self.start_wisp(bridge_config(self.remote, [{"pattern": "load/#", "direction": "out", "qos": 1}]))
        far = self.remote_client("far", [("load/#", 1)], clean=False)
        pub = self.local_client("loader")
        stats = {"acked": 0}
        stop = threading.Event()
        failure = []

        def publish_loop():
            try:
                i = 0
                while not stop.is_set() and i < 50000:
                    pub.publish("load/x", str(i).encode(), qos=1, pid=(i % 65535) + 1)
                    i += 1
                    stats["acked"] = i
                    time.sleep(0.001)  # a steady load, not a flood: the point is the outage
            except Exception as e:  # noqa: BLE001 - reported by the main thread
                failure.append(e)

        t = threading.Thread(target=publish_loop, daemon=True)
        t.start()
        self.addCleanup(t.join, 10)
        self.addCleanup(stop.set)
        # Under load: the remote has delivered some before it stops.
        first = self.collect(far, 200)
        offset = self.wisp.log_size()
        self.remote.stop()
        far.close()
        self.assertIsNotNone(self.wisp.wait_log(r"bridge up: disconnected", offset=offset, timeout=WAIT),
                             "the bridge did not notice the remote's end")
        during = stats["acked"]
        time.sleep(10)  # the outage itself is the scenario: 10 s, publishing all along
        self.assertGreater(stats["acked"], during, "Wisp stopped acknowledging while the uplink was down")
        offset = self.wisp.log_size()
        self.remote.start()
        self.wait_connected(offset)
        stop.set()
        t.join(IO_TIMEOUT * 2)
        self.assertEqual(failure, [])
        total = stats["acked"]
        far = self.remote_client("far", None, clean=False)  # its session is Mosquitto's
        order = self.collect(far, total, order=first)
        self.assertEqual(order, sorted(order), "messages arrived out of order")
        self.assertEqual(set(order), set(range(total)))

    def test_kill9_while_uplink_down(self):
        """Messages acknowledged while the remote is unreachable wait in the
        store: kill -9 of Wisp loses none, and they drain after the restart.
        $SYS shows the bridge down with its queue."""
        cfg = bridge_config(self.remote, [{"pattern": "q/#", "direction": "out", "qos": 1}])
        cfg["sys_interval"] = 1
        # Offline sessions expire after 1 s here: never the bridge's.
        wisp = self.start_wisp(cfg, limits={"max_session_expiry": 1})
        far = self.remote_client("far-q", [("q/#", 1)], clean=False)
        far.close()
        offset = wisp.log_size()
        self.remote.stop()
        self.assertIsNotNone(wisp.wait_log(r"bridge up: disconnected", offset=offset, timeout=WAIT))
        pub = self.local_client("queuer")
        count = 300
        for i in range(count):
            pub.publish("q/x", str(i).encode(), qos=1, pid=i + 1)
        sysw = self.local_client("sys-watch", [("$SYS/broker/bridges/#", 0)])
        v = self.sys_values(sysw, lambda v: v.get("queued") == str(count) and v.get("connected") == "0"
                            and v.get("last_error", "none") != "none")
        self.assertEqual(set(v), {"connected", "queued", "dropped", "connects", "last_error"})
        self.assertEqual(v["dropped"], "0")
        wisp.proc.kill()  # kill -9
        wisp.proc.wait(timeout=10)
        for c in (pub, sysw):
            c.close()
        wisp.start()
        time.sleep(2.5)  # past max_session_expiry with the uplink still down
        self.remote.start()
        offset = 0
        self.assertIsNotNone(wisp.wait_log(r"bridge up: connected to .*, %d queued" % count, offset=offset,
                                           timeout=WAIT), "the queue did not survive kill -9")
        far = self.remote_client("far-q", None, clean=False)
        order = self.collect(far, count)
        self.assertEqual(order, list(range(count)))

    def test_inbound_survives_kill9_mid_stream(self):
        """The remote's messages are acknowledged to it only once stored
        here: kill -9 of Wisp in the middle of an inbound QoS 1 stream loses
        none (what Wisp did not acknowledge, the remote sends again)."""
        # The local subscriber's queue holds the whole stream (it is
        # offline while Wisp restarts and the remote resends).
        wisp = self.start_wisp(bridge_config(self.remote, [{"pattern": "in/#", "direction": "in", "qos": 1}]),
                               limits={"max_queued_messages": 10000})
        near = self.local_client("store-sub", None)
        near.close()
        near = RawClient(wisp.port)
        self.assertEqual(near.connect("store-sub", clean=False), 0)
        near.subscribe([("in/#", 1)])
        rpub = self.remote_client("rpub-in", None)
        probe_in(rpub, "in/probe", b"-1", near)
        count = 2000
        failure = []

        def publish_all():
            try:
                for i in range(count):
                    rpub.publish("in/x", str(i).encode(), qos=1, pid=(i % 65535) + 1)
            except Exception as e:  # noqa: BLE001 - reported below
                failure.append(e)

        t = threading.Thread(target=publish_all, daemon=True)
        t.start()
        seen = set()
        while len(seen) < 300:
            got = near.recv_publish(timeout=WAIT)
            if got.topic == "in/x":
                seen.add(int(got.payload))
        wisp.proc.kill()  # kill -9 in the middle of the stream
        wisp.proc.wait(timeout=10)
        near.close()
        t.join(WAIT * 2)
        self.assertEqual(failure, [])
        wisp.start()
        near = RawClient(wisp.port)
        self.addCleanup(near.close)
        self.assertEqual(near.connect("store-sub", clean=False), 0)
        self.assertTrue(near.session_present)
        deadline = time.monotonic() + WAIT * 4
        while len(seen) < count and time.monotonic() < deadline:
            try:
                got = near.recv_publish(timeout=WAIT)
            except AssertionError:
                break
            if got.topic == "in/x":
                seen.add(int(got.payload))
        self.assertEqual(sorted(set(range(count)) - seen)[:20], [], "inbound messages lost by kill -9 (%d of %d)\n%s"
                         % (len(seen), count, "\n".join(l for l in wisp.log().splitlines() if "bridge" in l)))

    def test_queue_bound_drops_and_counts(self):
        """max_queued_messages bounds what waits for the remote: past it a
        message is dropped, counted in $SYS and logged once per episode."""
        cfg = bridge_config(self.remote, [{"pattern": "b/#", "direction": "out", "qos": 1}],
                            max_queued_messages=10)
        cfg["sys_interval"] = 1
        wisp = self.start_wisp(cfg)
        offset = wisp.log_size()
        self.remote.stop()
        self.assertIsNotNone(wisp.wait_log(r"bridge up: disconnected", offset=offset, timeout=WAIT))
        pub = self.local_client("over")
        for i in range(25):
            pub.publish("b/x", str(i).encode(), qos=1, pid=i + 1)
        sysw = self.local_client("sys-watch", [("$SYS/broker/bridges/#", 0)])
        v = self.sys_values(sysw, lambda v: v.get("dropped") == "15")
        self.assertEqual(v.get("queued"), "10")
        # Nobody local takes the bridge's session (and its queue) over.
        thief = RawClient(wisp.port)
        self.addCleanup(thief.close)
        self.assertEqual(thief.connect("$bridge/up", clean=False), 2)
        self.assertEqual(len(re.findall(r"client \$bridge/up: .*queue_full", wisp.log())), 1,
                         "the drops were not logged once")

    def test_queue_qos0_waits_for_the_remote(self):
        """queue_qos0: QoS 0 messages for the remote wait while it is away
        and leave in order when it is back, within max_queued_messages
        (past it dropped, counted in $SYS, logged once). Mosquitto's bridge
        does the same with queue_qos0_messages true (2.0.11's
        db__message_insert drops QoS 0 for a disconnected bridge unless
        queue_qos0_messages is set or start_type is lazy, and queues it
        under max_queued_messages otherwise). Without it (the default) they
        are dropped, as for any offline session."""
        self.remote.extra.append("queue_qos0_messages true")  # the far subscriber's own queue
        self.remote.stop()
        self.remote.start()
        cfg = bridge_config(self.remote, [{"pattern": "q/#", "direction": "out", "qos": 1}],
                            max_queued_messages=10, queue_qos0=True)
        cfg["sys_interval"] = 1
        wisp = self.start_wisp(cfg)
        far = self.remote_client("far-q0", [("q/#", 1)], clean=False)
        pub = self.local_client("pub-q0")
        pub.publish("q/x", b"before", qos=0)
        self.assertEqual(far.recv_publish(timeout=WAIT).payload, b"before")
        far.close()
        offset = wisp.log_size()
        self.remote.stop()
        self.assertIsNotNone(wisp.wait_log(r"bridge up: disconnected", offset=offset, timeout=WAIT))
        for i in range(25):
            pub.publish("q/x", str(i).encode(), qos=0)
        pub.publish("elsewhere", b"sync", qos=1)  # the loop handled the 25 before this PUBACK
        sysw = self.local_client("sys-q0", [("$SYS/broker/bridges/#", 0)])
        v = self.sys_values(sysw, lambda v: v.get("dropped") == "15")
        self.assertEqual(v.get("queued"), "10")
        self.assertEqual(len(re.findall(r"client \$bridge/up: .*queue_full", wisp.log())), 1,
                         "the drops were not logged once")
        offset = wisp.log_size()
        self.remote.start()
        self.wait_connected(offset)
        far = self.remote_client("far-q0", None, clean=False)
        got = [int(far.recv_publish(timeout=WAIT).payload) for _ in range(10)]
        self.assertEqual(got, list(range(10)))
        # One still waiting at the exit is freed with the rest (stop() fails
        # on a sanitizer report).
        offset = wisp.log_size()
        self.remote.stop()
        self.assertIsNotNone(wisp.wait_log(r"bridge up: disconnected", offset=offset, timeout=WAIT))
        pub.publish("q/x", b"left", qos=0)
        pub.publish("elsewhere", b"sync", qos=1, pid=2)
        self.wisp.stop()

    def test_reload_keeps_bridges_and_says_so(self):
        """SIGHUP does not restart bridges: a changed bridges section is
        logged as needing a restart, and the running bridge carries on."""
        cfg = bridge_config(self.remote, [{"pattern": "r/#", "direction": "out", "qos": 1}])
        wisp = self.start_wisp(cfg)
        cfg2 = wisp.config()
        cfg2["bridges"][0]["addresses"] = ["127.0.0.1:1"]
        wisp.write_config(cfg2)
        offset = wisp.log_size()
        wisp.reload()
        self.assertIsNotNone(wisp.wait_log(r"reload: bridges\[0\]\.addresses changed from \".*\" to "
                                           r"\"127\.0\.0\.1:1\": needs a restart", offset=offset, timeout=WAIT))
        far = self.remote_client("far-r", [("r/#", 1)])
        self.local_client("pub-r").publish("r/1", b"still", qos=1)
        self.assertEqual(far.recv_publish(timeout=WAIT).payload, b"still")

    def test_failures_are_named(self):
        """Why a bridge is down is logged and in $SYS last_error: a remote
        that never answers CONNECT; a v5 remote that accepts and then ends
        the session with DISCONNECT 0x8E (session taken over)."""
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        self.addCleanup(silent.close)
        taker = socket.socket()
        taker.bind(("127.0.0.1", 0))
        taker.listen(8)
        self.addCleanup(taker.close)
        taker.settimeout(WAIT)

        def take_over():
            conn, _ = taker.accept()
            with conn:
                conn.settimeout(WAIT)
                conn.recv(4096)  # the CONNECT
                conn.sendall(bytes([0x20, 0x03, 0x00, 0x00, 0x00]) + bytes([0xE0, 0x01, 0x8E]))
                try:
                    conn.recv(4096)  # until the bridge closes
                except OSError:
                    pass

        t = threading.Thread(target=take_over, daemon=True)
        t.start()
        self.addCleanup(t.join, WAIT)
        cfg = bridge_config(self.remote, [{"pattern": "f/#", "direction": "out", "qos": 1}], version="mqttv50",
                            client_id="gw-f", connect_timeout=1)
        cfg["bridges"][0]["addresses"] = ["127.0.0.1:%d" % silent.getsockname()[1],
                                          "127.0.0.1:%d" % taker.getsockname()[1]]
        cfg["sys_interval"] = 1
        self.wisp = Broker(config=cfg)
        self.addCleanup(stop_and_clean, self.wisp)
        self.wisp.start()
        self.assertIsNotNone(self.wisp.wait_log(r"bridge up: disconnected from 127\.0\.0\.1:%d: no CONNACK within 1 s"
                                                % silent.getsockname()[1], timeout=WAIT), self.wisp.log())
        self.assertIsNotNone(self.wisp.wait_log(r"bridge up: disconnected from 127\.0\.0\.1:%d: the remote "
                                                r"disconnected \(reason 0x8e\)" % taker.getsockname()[1],
                                                timeout=WAIT), self.wisp.log())
        sysw = self.local_client("sys-f", [("$SYS/broker/bridges/up/last_error", 0)])
        v = self.sys_values(sysw, lambda v: v.get("last_error") in ("no CONNACK within 1 s",
                                                                   "the remote disconnected (reason 0x8e)"))
        self.assertIn(v["last_error"], ("no CONNACK within 1 s", "the remote disconnected (reason 0x8e)"))
        self.wisp.stop()

    def test_remote_maximum_qos_is_honoured(self):
        """A v5 remote whose CONNACK says Maximum QoS 1 gets QoS 1, not the
        rule's 2 [MQTT-3.2.2-11]."""
        fake = socket.socket()
        fake.bind(("127.0.0.1", 0))
        fake.listen(8)
        fake.settimeout(WAIT)
        self.addCleanup(fake.close)
        cfg = bridge_config(self.remote, [{"pattern": "m/#", "direction": "out", "qos": 2}], version="mqttv50")
        cfg["bridges"][0]["addresses"] = ["127.0.0.1:%d" % fake.getsockname()[1]]
        self.wisp = Broker(config=cfg)
        self.addCleanup(stop_and_clean, self.wisp)
        self.wisp.start()
        conn, _ = fake.accept()
        self.addCleanup(conn.close)
        conn.settimeout(WAIT)
        buf = [b""]

        def packet():
            """The next whole packet from the bridge: (first byte, body)."""
            while True:
                b = buf[0]
                if len(b) >= 2:
                    n, mult, pos = 0, 1, 1
                    while pos < len(b) and pos <= 4:
                        n += (b[pos] & 0x7F) * mult
                        mult *= 128
                        pos += 1
                        if not b[pos - 1] & 0x80:
                            if len(b) >= pos + n:
                                buf[0] = b[pos + n:]
                                return b[0], b[pos:pos + n]
                            break
                chunk = conn.recv(4096)
                if not chunk:
                    raise AssertionError("the bridge closed the connection")
                buf[0] += chunk

        self.assertEqual(packet()[0] >> 4, 1, "the bridge's first packet is CONNECT")
        conn.sendall(bytes([0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x01]))  # CONNACK, Maximum QoS 1
        self.wait_connected()
        self.local_client("pub-m").publish("m/x", b"q", qos=2)
        for _ in range(10):  # PINGREQs may come first
            first, _body = packet()
            if first >> 4 == 3:
                break
        self.assertEqual(first >> 4, 3, "no PUBLISH reached the remote")
        self.assertEqual((first >> 1) & 3, 1, "PUBLISH QoS over the remote's Maximum QoS")
        self.wisp.stop()

    def test_retained_go_out_once_when_a_rule_is_new(self):
        """What is retained locally when an out rule first appears goes to
        the remote (retained there too); a restart with the same rule does
        not send it again."""
        wisp = Broker()
        self.addCleanup(stop_and_clean, wisp)
        wisp.start()
        pub = RawClient(wisp.port)
        self.assertEqual(pub.connect("ret-pub"), 0)
        pub.publish("ret/a", b"last", qos=1, retain=True)
        pub.close()
        wisp.stop()
        wisp.exit_status = None
        wisp.extra_config.update(bridge_config(self.remote, [{"pattern": "ret/#", "direction": "out", "qos": 1}]))
        self.wisp = wisp
        wisp.start()
        self.wait_connected()
        far = self.remote_client("far-ret", [("ret/#", 1)])
        got = far.recv_publish(timeout=WAIT)
        self.assertEqual((got.topic, got.payload, got.retain), ("ret/a", b"last", True))
        wisp.stop()
        wisp.exit_status = None
        offset = wisp.log_size()
        wisp.start()
        self.wait_connected(offset)
        # A marker published after the restart arrives first: nothing was re-sent.
        marker = RawClient(wisp.port)
        self.addCleanup(marker.close)
        self.assertEqual(marker.connect("ret-marker"), 0)
        marker.publish("ret/marker", b"m", qos=1)
        got = far.recv_publish(timeout=WAIT)
        self.assertEqual(got.topic, "ret/marker")

    def test_removed_bridge_session_ends(self):
        """A bridge taken out of the configuration: its stored session (and
        what waited in it) ends at the next start, logged, instead of
        filling up forever."""
        wisp = self.start_wisp(bridge_config(self.remote, [{"pattern": "gone/#", "direction": "out", "qos": 1}]))
        offset = wisp.log_size()
        self.remote.stop()
        self.assertIsNotNone(wisp.wait_log(r"bridge up: disconnected", offset=offset, timeout=WAIT))
        pub = self.local_client("gone-pub")
        for i in range(5):
            pub.publish("gone/x", b"%d" % i, qos=1, pid=i + 1)
        pub.close()
        wisp.stop()
        wisp.exit_status = None
        del wisp.extra_config["bridges"]
        offset = wisp.log_size()
        wisp.start()
        self.assertIsNotNone(wisp.wait_log(r"\$bridge/up: no such bridge in the configuration any more: its "
                                           r"session ends, with 5 messages", offset=offset, timeout=WAIT))
        wisp.stop()

    def test_long_credentials(self):
        """A CONNECT of several KiB (a long token as the password) goes out
        whole: Mosquitto accepts the bridge."""
        self.start_wisp(bridge_config(self.remote, [{"pattern": "l/#", "direction": "out", "qos": 1}],
                                      username="gateway", password="t" * 3000))

    def test_no_echo_loop(self):
        """The same topics in and out: a message crosses once each way and
        never comes back (3.1.1: try_private; 5: No Local)."""
        for version in ("mqttv311", "mqttv50"):
            with self.subTest(version=version):
                cfg = bridge_config(self.remote, [{"pattern": "loop/#", "direction": "both", "qos": 1}],
                                    version=version, client_id="loop-" + version)
                wisp = Broker(config=cfg)
                self.wisp = wisp
                try:
                    wisp.start()
                    self.wait_connected()
                    near = RawClient(wisp.port)
                    self.assertEqual(near.connect("near"), 0)
                    near.subscribe([("loop/#", 1)])
                    far = RawClient(self.remote.port)
                    self.assertEqual(far.connect("far"), 0)
                    far.subscribe([("loop/#", 1)])
                    # The bridge's SUBSCRIBE on the remote: a probe from
                    # the remote side reaches the local subscriber.
                    probe = RawClient(self.remote.port)
                    self.assertEqual(probe.connect("probe"), 0)
                    probe_in(probe, "loop/probe", b"p", near)
                    pub = RawClient(wisp.port)
                    self.assertEqual(pub.connect("pub"), 0)
                    pub.publish("loop/a", b"once", qos=1)
                    # Two markers, one from each side, end the watch.
                    pub.publish("loop/end", b"local", qos=1, pid=2)
                    probe.publish("loop/end", b"remote", qos=1, pid=3)
                    for client, name in ((near, "local"), (far, "remote")):
                        seen = []
                        ends = 0
                        while ends < 2:
                            got = client.recv_publish(timeout=WAIT)
                            if got.topic == "loop/end":
                                ends += 1
                            elif got.topic == "loop/a":
                                seen.append(got.payload)
                        self.assertEqual(seen, [b"once"], "%s subscriber: loop/a %d times" % (name, len(seen)))
                    for c in (near, far, probe, pub):
                        c.close()
                finally:
                    wisp.stop()
                    wisp.cleanup()

    def test_both_directions_each_qos(self):
        for version in ("mqttv311", "mqttv50"):
            with self.subTest(version=version):
                self.remote.stop()
                self.remote.start()
                cfg = bridge_config(self.remote, [
                    {"pattern": "site/#", "direction": "out", "qos": 2},
                    {"pattern": "cmd/#", "direction": "in", "qos": 2},
                ], version=version)
                wisp = Broker(config=cfg)
                try:
                    self.wisp = wisp
                    wisp.start()
                    self.wait_connected()
                    far = RawClient(self.remote.port)
                    self.assertEqual(far.connect("far-" + version), 0)
                    far.subscribe([("site/#", 2)])
                    near = RawClient(wisp.port)
                    self.assertEqual(near.connect("near-" + version), 0)
                    near.subscribe([("cmd/#", 2)])
                    pub = RawClient(wisp.port)
                    self.assertEqual(pub.connect("pub-" + version), 0)
                    rpub = RawClient(self.remote.port)
                    self.assertEqual(rpub.connect("rpub-" + version), 0)
                    # Out: local publish at each QoS reaches the remote subscriber.
                    for qos in (0, 1, 2):
                        pub.publish("site/t%d" % qos, b"out-%d" % qos, qos=qos, pid=10 + qos)
                        got = far.recv_publish(timeout=WAIT)
                        self.assertEqual((got.topic, got.payload, got.qos),
                                         ("site/t%d" % qos, b"out-%d" % qos, qos))
                    # In: the bridge's SUBSCRIBE reached the remote before its
                    # CONNACK log line's turn ended; probe until it carries.
                    probe_in(rpub, "cmd/probe", b"p", near, qos=0)
                    for qos in (0, 1, 2):
                        rpub.publish("cmd/c%d" % qos, b"in-%d" % qos, qos=qos, pid=20 + qos)
                        for _ in range(20):  # probes still on their way
                            got = near.recv_publish(timeout=WAIT)
                            if got.topic != "cmd/probe":
                                break
                        self.assertEqual((got.topic, got.payload, got.qos),
                                         ("cmd/c%d" % qos, b"in-%d" % qos, qos))
                    for c in (far, near, pub, rpub):
                        c.close()
                finally:
                    wisp.stop()
                    wisp.cleanup()

    def acl_bridge(self, **extra):
        """Wisp with an acl_file (anonymous clients may do anything; user
        bridgeuser may write in/allowed/# and read out/allowed/#) and a
        bridge carrying in/# in and out/# out; the local subscriber to in/#
        and the remote one to out/#, both past the bridge's SUBSCRIBE."""
        acl = os.path.join(self.remote.dir, "acl")
        with open(acl, "w") as f:
            f.write("topic readwrite #\nuser bridgeuser\ntopic write in/allowed/#\ntopic read out/allowed/#\n")
        cfg = bridge_config(self.remote, [{"pattern": "in/#", "direction": "in", "qos": 1},
                                          {"pattern": "out/#", "direction": "out", "qos": 1}], **extra)
        cfg["auth"] = {"acl_file": acl}
        self.start_wisp(cfg)
        near = self.local_client("near-acl", [("in/#", 1)])
        far = self.remote_client("far-acl", [("out/#", 1)])
        rpub = self.remote_client("rpub-acl", None)
        lpub = self.local_client("lpub-acl")
        self.assertEqual(probe_in(rpub, "in/allowed/probe", b"p", near).topic, "in/allowed/probe")
        return near, far, rpub, lpub

    def crossing(self, near, far, rpub, lpub):
        """Which of a denied and an allowed topic cross each way: the
        allowed one is published second, so whatever arrives before it
        crossed too."""
        rpub.publish("in/denied/x", b"1", qos=1, pid=7)
        rpub.publish("in/allowed/x", b"2", qos=1, pid=8)
        lpub.publish("out/denied/x", b"3", qos=1, pid=9)
        lpub.publish("out/allowed/x", b"4", qos=1, pid=10)
        seen = []
        for client, last in ((near, "in/allowed/x"), (far, "out/allowed/x")):
            while True:
                got = client.recv_publish(timeout=WAIT)
                seen.append(got.topic)
                if got.topic == last:
                    break
        return seen

    def test_local_username_puts_the_bridge_under_the_acl(self):
        """local_username: what comes in from the remote is published
        locally as that user would publish it (ACL write), what goes out is
        what that user may read (ACL read). Mosquitto documents local_username
        as the bridge's local user "important when ACLs are used"; Mosquitto
        2.0.11 run with this very acl_file and bridge lets the denied topics
        cross both ways (its ACL check passes a bridge's own traffic, observed
        on Debian's 2.0.11): Wisp applies the rules, as documented."""
        near, far, rpub, lpub = self.acl_bridge(local_username="bridgeuser")
        self.assertEqual(self.crossing(near, far, rpub, lpub), ["in/allowed/x", "out/allowed/x"])
        self.wisp.stop()

    def test_without_local_username_the_acl_does_not_apply(self):
        """Unset, the bridge's local side follows no ACL rules (as before
        local_username existed): both topics cross both ways."""
        near, far, rpub, lpub = self.acl_bridge()
        self.assertEqual(self.crossing(near, far, rpub, lpub),
                         ["in/denied/x", "in/allowed/x", "out/denied/x", "out/allowed/x"])
        self.wisp.stop()

    def test_a_reload_leaves_a_bridge_without_local_username_outside_the_acl(self):
        """SIGHUP rebuilds every session's ACL rules: a bridge without
        local_username stays without any (it did get the anonymous
        clients' rules, here none, and carried nothing any more)."""
        acl = os.path.join(self.remote.dir, "acl")
        with open(acl, "w") as f:
            f.write("user tester\ntopic readwrite #\n")  # anonymous clients may do nothing
        cfg = bridge_config(self.remote, [{"pattern": "in/#", "direction": "in", "qos": 1},
                                          {"pattern": "out/#", "direction": "out", "qos": 1}])
        cfg["auth"] = {"acl_file": acl}
        wisp = self.start_wisp(cfg)
        offset = wisp.log_size()
        wisp.reload()
        self.assertIsNotNone(wisp.wait_log(r"configuration reloaded", offset=offset, timeout=WAIT))
        near = RawClient(wisp.port)
        self.addCleanup(near.close)
        self.assertEqual(near.connect("near-rl", username="tester"), 0)
        self.assertEqual(near.subscribe([("in/#", 1)]), [1])
        far = self.remote_client("far-rl", [("out/#", 1)])
        rpub = self.remote_client("rpub-rl", None)
        self.assertEqual(probe_in(rpub, "in/x", b"in", near).payload, b"in")
        lpub = RawClient(wisp.port)
        self.addCleanup(lpub.close)
        self.assertEqual(lpub.connect("lpub-rl", username="tester"), 0)
        lpub.publish("out/x", b"out", qos=1)
        self.assertEqual(far.recv_publish(timeout=WAIT).payload, b"out")
        wisp.stop()

    def test_mosquitto_conf_connection_runs(self):
        """A mosquitto.conf with a `connection` runs unchanged under Wisp:
        the bridge it describes carries both ways, with prefixes
        (local_username without an acl_file changes nothing, as in
        Mosquitto)."""
        self.wisp = Broker()
        self.addCleanup(stop_and_clean, self.wisp)
        port = free_port()
        conf = os.path.join(self.wisp.dir, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type all\n"
                    "connection up\naddress 127.0.0.1:%d\nremote_clientid gw-conf\nkeepalive_interval 10\n"
                    "restart_timeout 1 2\nlocal_username gateway\n"
                    "topic t/# out 1 site/ central/site/\ntopic c/# in 1 \"\" down/\n"
                    % (port, self.remote.port))
        log = open(self.wisp.log_path, "ab")
        self.wisp.port = port
        self.wisp.proc = subprocess.Popen([os.environ["WISP_BIN"], "-c", conf], stdout=log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          cwd=self.wisp.dir)
        log.close()
        self.wait_connected()
        far = self.remote_client("far-conf", [("central/#", 1)])
        near = self.local_client("near-conf", [("c/#", 1)])
        self.local_client("pub-conf").publish("site/t/temp", b"21", qos=1)
        got = far.recv_publish(timeout=WAIT)
        self.assertEqual((got.topic, got.payload), ("central/site/t/temp", b"21"))
        rpub = self.remote_client("rpub-conf", None)
        got = probe_in(rpub, "down/c/open", b"1", near)
        self.assertEqual((got.topic, got.payload), ("c/open", b"1"))
        self.wisp.stop()


class BridgeTlsTest(unittest.TestCase):
    """Mutual TLS to a Mosquitto that requires a client certificate, after
    failing over from an address where nothing listens; /metrics shows the
    bridge."""

    def setUp(self):
        self.certs = tempfile.mkdtemp(prefix="wisp-bridge-certs-")
        self.addCleanup(shutil.rmtree, self.certs, True)
        make_certs(self.certs)
        make_certs(self.certs, "client", "gateway")
        c = lambda n: os.path.join(self.certs, n)  # noqa: E731
        self.remote = Remote(["cafile %s" % c("ca.crt"), "certfile %s" % c("server.crt"),
                              "keyfile %s" % c("server.key"), "require_certificate true"])
        self.addCleanup(self.remote.cleanup)
        self.remote.start()

    def bridge(self, **tls):
        dead = refused_port()  # nothing listens there: the first address fails
        return {"bridges": [{
            "name": "up", "addresses": ["localhost:%d" % dead, "localhost:%d" % self.remote.port],
            "client_id": "gateway-tls", "reconnect_min": 1, "reconnect_max": 1,
            "topics": [{"pattern": "s/#", "direction": "out", "qos": 1}], **tls}]}

    def test_mutual_tls_after_failover(self):
        c = lambda n: os.path.join(self.certs, n)  # noqa: E731
        wisp = MetricsBroker(config=self.bridge(cafile=c("ca.crt"), certfile=c("gateway.crt"),
                                                keyfile=c("gateway.key")))
        self.addCleanup(stop_and_clean, wisp)
        wisp.start()
        self.assertIsNotNone(wisp.wait_log(r"bridge up: localhost:\d+: connect: Connection refused", timeout=WAIT))
        self.assertIsNotNone(wisp.wait_log(r"bridge up: connected to localhost:%d" % self.remote.port,
                                           timeout=WAIT), "no failover to the second address")
        far = RawClient(self.remote.port, tls=client_tls_context(c("ca.crt"), c("gateway.crt"),
                                                                   c("gateway.key")))
        self.addCleanup(far.close)
        self.assertEqual(far.connect("far-tls"), 0)
        far.subscribe([("s/#", 1)])
        pub = RawClient(wisp.port)
        self.addCleanup(pub.close)
        self.assertEqual(pub.connect("pub-tls"), 0)
        pub.publish("s/1", b"over tls", qos=1)
        got = far.recv_publish(timeout=WAIT)
        self.assertEqual((got.topic, got.payload), ("s/1", b"over tls"))
        text = wisp.metrics()
        self.assertIn('wisp_bridge_connected{bridge="up"} 1', text)
        self.assertIn('wisp_bridge_queued{bridge="up"} 0', text)
        self.assertIn('wisp_bridge_connects_total{bridge="up"} 1', text)
        self.assertIn('wisp_bridge_dropped_total{bridge="up"} 0', text)
        wisp.stop()

    def test_bad_ca_file_is_refused_by_check_and_start_alike(self):
        """A CA file that is not PEM: --check-config refuses it with the
        same words start-up does (and start-up does)."""
        bad = os.path.join(self.certs, "not-a-ca.pem")
        with open(bad, "w") as f:
            f.write("not a certificate\n")
        wisp = Broker(config=self.bridge(cafile=bad))
        self.addCleanup(stop_and_clean, wisp)
        status, log = wisp.start_failing()
        self.assertNotEqual(status, 0)
        line = [l for l in log.splitlines() if "bridges[0]" in l]
        self.assertTrue(line, log)
        check = run_wisp(["--check-config", wisp.config_path])
        self.assertEqual(check.returncode, 1, check.stdout)
        self.assertIn(line[0].replace("wisp: ", "", 1), check.stdout)

    def test_without_client_certificate_is_refused_and_said(self):
        """The remote requires a certificate: the bridge stays down, says
        why in $SYS, and backs off (it does not spin)."""
        c = lambda n: os.path.join(self.certs, n)  # noqa: E731
        cfg = self.bridge(cafile=c("ca.crt"))
        cfg["sys_interval"] = 1
        wisp = Broker(config=cfg)
        self.addCleanup(stop_and_clean, wisp)
        wisp.start()
        sysw = RawClient(wisp.port)
        self.addCleanup(sysw.close)
        self.assertEqual(sysw.connect("sys-tls"), 0)
        sysw.subscribe([("$SYS/broker/bridges/up/last_error", 0)])
        deadline = time.monotonic() + WAIT
        while True:
            got = sysw.recv_publish(timeout=WAIT)
            if "TLS handshake failed" in got.payload.decode() or time.monotonic() > deadline:
                break
        self.assertIn("TLS handshake failed", got.payload.decode())
        # Each attempt waits at least reconnect_min/2: a handful, not thousands.
        attempts = len(re.findall(r"bridge up: localhost:\d+:", wisp.log()))
        self.assertLess(attempts, 40, "the bridge reconnects without backing off")
        wisp.stop()


def preload(shim):
    """The shim after the ASan runtime, if the broker has one: ASan insists
    on coming first, and its getaddrinfo() interceptor then calls the shim."""
    out = subprocess.run(["ldd", wisp_binary()], stdout=subprocess.PIPE, text=True).stdout
    m = re.search(r"(\S*libasan\.so\S*) => (\S+)", out)
    return ":".join(([m.group(2)] if m else []) + [shim])


class SlowDnsBroker(Broker):
    """Wisp whose lookups of names under .slow.invalid hang until released."""

    def __init__(self, shim, note, release, **kw):
        super().__init__(**kw)
        self.shim, self.note, self.release = shim, note, release

    def _env(self):
        env = super()._env()
        env["LD_PRELOAD"] = preload(self.shim)
        env["SLOWDNS_SUFFIX"] = ".slow.invalid"
        env["SLOWDNS_LOG"] = self.note
        env["SLOWDNS_RELEASE"] = self.release
        return env


class BridgeResolveTest(unittest.TestCase):
    """Names in `addresses` are looked up off the loop."""

    def slowdns(self):
        """The shim, and the files it notes lookups in and waits for."""
        shim = os.environ.get("WISP_SLOWDNS")
        if not shim or not os.path.exists(shim):
            self.fail("WISP_SLOWDNS must name the built libslowdns.so (tests/support)")
        tmp = tempfile.mkdtemp(prefix="wisp-slowdns-")
        self.addCleanup(shutil.rmtree, tmp, True)
        return shim, os.path.join(tmp, "lookups"), os.path.join(tmp, "release")

    def test_a_name_that_does_not_resolve_stalls_no_client(self):
        """While the lookup of a bridge's name hangs, an honest client's
        QoS 1 round trip completes; the lookup is abandoned at
        connect_timeout and logged, the next attempt does not pile a second
        lookup on it; a name that does not resolve (the hung one once
        released, and a plain .invalid one) is logged and retried with
        backoff."""
        shim, note, release = self.slowdns()

        def bridge(name, address, prefix):
            return {"name": name, "addresses": [address], "protocol_version": "mqttv311",
                    "client_id": "gw-" + name, "keepalive": 10, "reconnect_min": 1, "reconnect_max": 2,
                    "connect_timeout": 2, "topics": [{"pattern": prefix + "/#", "direction": "out", "qos": 1}]}

        cfg = {"bridges": [bridge("slow", "gateway.slow.invalid:1883", "s"),
                           bridge("nowhere", "nowhere.invalid:1883", "n")]}
        wisp = SlowDnsBroker(shim, note, release, config=cfg)
        self.addCleanup(stop_and_clean, wisp)
        # Runs first: a lookup still hanging would hold the broker's exit.
        self.addCleanup(lambda: open(release, "w").close())
        wisp.start()

        def lookups():
            try:
                with open(note) as f:
                    return f.read().count("gateway.slow.invalid")
            except FileNotFoundError:
                return 0

        deadline = time.monotonic() + WAIT
        while lookups() == 0:
            self.assertLess(time.monotonic(), deadline, "the bridge never looked its name up")
            time.sleep(0.05)

        c = RawClient(wisp.port)
        self.addCleanup(c.close)
        self.assertEqual(c.connect("honest-dns"), 0)
        self.assertEqual(c.subscribe([("s/x", 1)]), [1])
        pub = RawClient(wisp.port)
        self.addCleanup(pub.close)
        self.assertEqual(pub.connect("honest-dns-pub"), 0)
        pub.publish("s/x", b"round trip", qos=1)
        self.assertEqual(c.recv_publish(timeout=WAIT).payload, b"round trip")
        self.assertNotIn("cannot resolve gateway", wisp.log(), "the lookup was released before the round trip")

        self.assertIsNotNone(wisp.wait_log(r"bridge slow: gateway\.slow\.invalid:1883: resolving "
                                           r"gateway\.slow\.invalid timed out after 2000 ms", timeout=WAIT),
                             wisp.log())
        self.assertIsNotNone(wisp.wait_log(r"bridge slow: gateway\.slow\.invalid:1883: the last lookup of "
                                           r"gateway\.slow\.invalid has not returned yet", timeout=WAIT),
                             wisp.log())
        self.assertEqual(lookups(), 1, "a second lookup piled up")

        open(release, "w").close()
        failed = r"bridge %s: %s:1883: cannot resolve %s: "
        for name, host in (("slow", r"gateway\.slow\.invalid"), ("nowhere", r"nowhere\.invalid")):
            deadline = time.monotonic() + WAIT * 2
            while len(re.findall(failed % (name, host, host), wisp.log())) < 2:
                self.assertLess(time.monotonic(), deadline,
                                "bridge %s: a failed lookup was not logged and retried\n%s" % (name, wisp.log()))
                time.sleep(0.05)
        # Each attempt waits at least reconnect_min/2: a handful, not thousands.
        self.assertLess(len(re.findall(r"bridge nowhere: ", wisp.log())), 40,
                        "the bridge retries without backing off")
        # Still serving.
        pub.publish("s/x", b"again", qos=1, pid=2)
        self.assertEqual(c.recv_publish(timeout=WAIT).payload, b"again")
        wisp.stop()

    def test_sigterm_does_not_wait_for_a_hung_lookup(self):
        """SIGTERM while a bridge's name lookup hangs: the broker exits at
        once (status 0, no sanitizer report: LeakSanitizer counts the
        lookup still running as held, not lost) instead of waiting until
        getaddrinfo gives up; the shim's lookup is still hanging then."""
        shim, note, release = self.slowdns()
        cfg = {"bridges": [{"name": "slow", "addresses": ["gateway.slow.invalid:1883"], "connect_timeout": 60,
                            "topics": [{"pattern": "s/#", "direction": "out", "qos": 1}]}]}
        wisp = SlowDnsBroker(shim, note, release, config=cfg)
        self.addCleanup(stop_and_clean, wisp)
        wisp.start()
        deadline = time.monotonic() + WAIT
        while not (os.path.exists(note) and "gateway.slow.invalid" in open(note).read()):
            self.assertLess(time.monotonic(), deadline, "the bridge never looked its name up")
            time.sleep(0.05)
        # The shim holds the lookup for 60 s unless released; stop() waits
        # far less than that for the exit (STOP_TIMEOUT).
        wisp.stop()
        self.assertFalse(os.path.exists(release))


if __name__ == "__main__":
    main()
