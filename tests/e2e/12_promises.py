#!/usr/bin/python3
# ctest: TIMEOUT 240
"""12 promises: what README.md and config/README.md promise, checked as a
user would see it (issue 14).

- limits.max_queued_messages 0 means unlimited: an offline persistent
  session keeps every acknowledged QoS 1 message.
- A message dropped by a queue bound is counted per reason in $SYS and
  logged once per episode with the client id and the bound.
- SIGHUP reopens the log file, so logrotate's rename-then-HUP works.
- wisp --check-config says exactly what start-up says about TLS listeners
  (tls.min_version "tls1.3" with mbed TLS 2.28, unusable certificates).
- A script with a skipped test exits 77, which CTest reports as skipped
  (SKIP_RETURN_CODE), never as passed.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (DISCONNECT_PKT, PUBACK, PUBLISH, Broker, BrokerTestCase, RawClient,  # noqa: E402
                      main, make_certs, publish_pkt, run_wisp, skip_unless_wisp)

SYS_DROPPED = "$SYS/broker/messages/dropped/"
SYS_DROPPED_TOTAL = "$SYS/broker/publish/messages/dropped"
DROP_REASONS = ("queue_full", "queue_bytes", "output_full", "offline_qos0", "no_memory")


class PromiseCase(BrokerTestCase):

    def go_offline(self, client, client_id):
        """DISCONNECT, close, and wait until the broker has processed it, so
        later publishes find the session offline."""
        offset = self.broker.log_size()
        client.send(DISCONNECT_PKT)
        self.assertTrue(client.wait_closed(), "[MQTT-3.14.4-1] no close after DISCONNECT")
        client.close()
        line = self.broker.wait_log(r"client %s\b.*(disconnect|closed)" % re.escape(client_id),
                                    offset, timeout=5)
        self.assertIsNotNone(line, "no disconnection of %s in the broker log" % client_id)

    def persistent(self, client_id, filters):
        c = self.raw(client_id, clean=False)
        self.assertEqual(c.subscribe(filters), [q for _, q in filters])
        return c

    def publish_many(self, client, topic, count, qos=1, batch=100, payload=b"m%d"):
        """Publishes count QoS 1 messages, pipelined `batch` at a time, and
        checks that every one was acknowledged (PUBACK with its id)."""
        sent = 0
        while sent < count:
            n = min(batch, count - sent)
            client.send(b"".join(publish_pkt(topic, payload % (sent + i), qos=qos,
                                             pid=1 + (sent + i) % 65535) for i in range(n)))
            for i in range(n):
                ack = client.expect(PUBACK)
                self.assertEqual(ack.pid, 1 + (sent + i) % 65535)
            sent += n

    def sys_watcher(self):
        """A raw client subscribed to the dropped-message counters; the
        retained values arrive at once, then every sys_interval."""
        w = self.raw("sys-watch")
        self.assertEqual(w.subscribe([(SYS_DROPPED + "#", 0), (SYS_DROPPED_TOTAL, 0)]), [0, 0])
        w.sys = {}
        return w

    def wait_sys(self, watcher, want, timeout=10.0):
        """Reads $SYS updates until every topic in `want` shows its value
        ({topic: "7"}) or passes its test ({topic: callable(str)}); fails
        with the last values seen otherwise. Returns the values seen."""
        def ok(topic, expected):
            v = watcher.sys.get(topic)
            return v is not None and (expected(v) if callable(expected) else v == expected)
        deadline = time.monotonic() + timeout
        while not all(ok(t, v) for t, v in want.items()):
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail("$SYS never showed %r; last seen %r" % (want, watcher.sys))
            try:
                pkt = watcher.recv_packet(left)
            except socket.timeout:
                continue
            if pkt.type == PUBLISH:
                watcher.sys[pkt.topic] = pkt.payload.decode()
        return watcher.sys

    def receive_all(self, client, count):
        """The payloads of the next count PUBLISHes, each acknowledged."""
        return [client.recv_publish().payload for _ in range(count)]


class UnlimitedQueueTest(PromiseCase):
    """config/README.md: max_queued_messages 0 = unlimited."""

    LIMITS = {"max_queued_messages": 0}

    def test_zero_queues_every_message(self):
        """2,000 QoS 1 messages acknowledged while the subscriber is offline
        all reach it, in order [MQTT-4.6.0-6], when it comes back."""
        count = 2000
        c = self.persistent("unlimited", [("uq/t", 1)])
        self.go_offline(c, "unlimited")
        pub = self.raw()
        self.publish_many(pub, "uq/t", count)
        c = self.raw("unlimited", clean=False)
        self.assertIs(c.session_present, True)
        got = self.receive_all(c, count)
        self.assertEqual(got, [b"m%d" % i for i in range(count)])
        c.assert_no_packet(0.3)


class DropCase(PromiseCase):

    def broker_options(self):
        return {"config": {"sys_interval": 1}}

    def drop_lines(self, client_id):
        return [line for line in self.broker.log().splitlines()
                if "client %s: dropping messages" % client_id in line]


@skip_unless_wisp("no per-reason drop counters, and a different log")
class QueueFullDropTest(DropCase):
    """An acknowledged message dropped by a queue bound is counted per
    reason in $SYS and logged once per episode, with the client id and the
    bound (config/README.md, limits)."""

    LIMITS = {"max_queued_messages": 5, "max_queued_bytes": 0}

    def test_queue_full_counted_and_logged_once_per_episode(self):
        """12 QoS 1 messages for an offline session bounded at 5: the 7
        acknowledged but dropped ones show in queue_full and in the total,
        one log line names the client and limits.max_queued_messages. Once
        the queue has room again (the client drained it), the next overflow
        is a new episode, logged once more."""
        watch = self.sys_watcher()
        zero = {SYS_DROPPED + r: "0" for r in DROP_REASONS}
        zero[SYS_DROPPED_TOTAL] = "0"
        self.wait_sys(watch, zero)
        c = self.persistent("bounded", [("dq/t", 1)])
        self.go_offline(c, "bounded")
        pub = self.raw()
        self.publish_many(pub, "dq/t", 12)
        self.wait_sys(watch, {SYS_DROPPED + "queue_full": "7", SYS_DROPPED_TOTAL: "7"})
        lines = self.drop_lines("bounded")
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("limits.max_queued_messages reached (5)", lines[0])
        self.assertIn("$SYS/broker/messages/dropped/queue_full", lines[0])

        c = self.raw("bounded", clean=False)
        self.assertEqual(self.receive_all(c, 5), [b"m%d" % i for i in range(5)])
        c.assert_no_packet(0.3)
        self.go_offline(c, "bounded")
        self.publish_many(pub, "dq/t", 8)  # 5 fit, which ends the episode; 3 dropped
        self.wait_sys(watch, {SYS_DROPPED + "queue_full": "10", SYS_DROPPED_TOTAL: "10"})
        self.assertIsNotNone(self.broker.wait_log(r"client bounded: room again under "
                                                  r"limits\.max_queued_messages"))
        self.assertEqual(len(self.drop_lines("bounded")), 2, self.drop_lines("bounded"))
        self.assert_broker_alive()


@skip_unless_wisp("no per-reason drop counters, and a different log")
class QueueBytesDropTest(DropCase):

    LIMITS = {"max_queued_messages": 0, "max_queued_bytes": 1000}

    def test_queue_bytes_counted_and_logged_once(self):
        """The byte bound has its own reason and names its key: 20 messages
        of about 100 bytes for an offline session bounded at 1,000 bytes."""
        watch = self.sys_watcher()
        c = self.persistent("bytes", [("db/t", 1)])
        self.go_offline(c, "bytes")
        pub = self.raw()
        self.publish_many(pub, "db/t", 20, payload=b"%03d" + b"x" * 97)
        seen = self.wait_sys(watch, {SYS_DROPPED + "queue_bytes": lambda v: int(v) > 0})
        self.assertEqual(seen[SYS_DROPPED + "queue_full"], "0")
        lines = self.drop_lines("bytes")
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("limits.max_queued_bytes reached (1000)", lines[0])
        c = self.raw("bytes", clean=False)
        kept = 20 - int(seen[SYS_DROPPED + "queue_bytes"])
        self.assertEqual(self.receive_all(c, kept), [b"%03d" % i + b"x" * 97 for i in range(kept)])
        c.assert_no_packet(0.3)


@skip_unless_wisp("no per-reason drop counters, and a different log")
class OutputFullDropTest(DropCase):

    LIMITS = {"max_output_buffer": 1024}

    def stalled_client(self, client_id):
        """A connected RawClient whose socket receive buffer is tiny (set
        before connecting), so that the broker's output to it fills quickly
        once it stops reading."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", self.broker.port))
        c = RawClient.__new__(RawClient)
        c.sock, c.buf, c.timeout, c.stash, c.session_present = sock, b"", 5.0, [], None
        self.on_cleanup(c.close)
        self.assertEqual(c.connect(client_id), 0)
        return c

    def test_output_full_qos0_counted_and_logged_once(self):
        """A subscriber that stops reading: once the socket buffers are full,
        its QoS 0 messages past max_output_buffer are dropped silently after
        one log line, and every message is either delivered or counted in
        output_full (and the total): none is lost uncounted."""
        watch = self.sys_watcher()
        stalled = self.stalled_client("stalled")
        self.assertEqual(stalled.subscribe([("do/t", 0), ("do/end", 1)]), [0, 1])
        pub = self.raw()
        payload = b"x" * 16384
        published = 0
        pid = 0

        def burst():
            nonlocal published, pid
            before = len(self.stalled_lines())
            pub.send(b"".join(publish_pkt("do/t", payload) for _ in range(64)))
            published += 64
            pid = pid % 60000 + 1
            pub.publish("do/sync", "s", qos=1, pid=pid)  # the 64 before it were routed
            return len(self.stalled_lines()) - before

        for _ in range(60):  # bounded: 60 x 1 MiB; the socket buffers fill well before
            if burst() == 0 and self.drop_lines("stalled"):
                break
        else:
            self.fail("the subscriber's output never stayed full:\n%s" % "\n".join(self.stalled_lines()))
        for _ in range(5):
            self.assertEqual(burst(), 0, "a stalled subscriber's drops are logged once per episode")
        lines = self.drop_lines("stalled")
        self.assertIn("limits.max_output_buffer reached (1024)", lines[0])
        self.assertEqual(len(lines), len([x for x in self.stalled_lines() if "room again" in x]) + 1)

        pub.publish("do/end", "end", qos=1, pid=60001)  # queued behind the output, not dropped
        delivered = 0
        for _ in range(published + 1):
            pkt = stalled.recv_publish(timeout=10)
            if pkt.topic == "do/end":
                break
            delivered += 1
        else:
            self.fail("no end marker")
        dropped = str(published - delivered)
        self.assertNotEqual(dropped, "0")
        self.wait_sys(watch, {SYS_DROPPED + "output_full": dropped, SYS_DROPPED_TOTAL: dropped})
        self.assert_broker_alive()

    def stalled_lines(self):
        return [line for line in self.broker.log().splitlines() if "client stalled:" in line]


@skip_unless_wisp("mosquitto reopens its log_dest file on SIGHUP too, but is configured differently")
class LogRotationTest(PromiseCase):
    """logrotate renames the log file, then sends SIGHUP: the broker must
    write its next lines into a new file at the configured path."""

    def setUp(self):
        self._closers = []
        self.broker = Broker()
        self.log_file = os.path.join(self.broker.dir, "wisp.log")
        self.broker.extra_config["log"] = {"level": "debug", "destination": self.log_file}
        self.broker.start()

    def read(self, path):
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_file_line(self, path, pattern, timeout=5.0):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.read(path).splitlines():
                if rx.search(line):
                    return line
            time.sleep(0.05)
        self.fail("no line matching %r in %s:\n%s" % (pattern, path, self.read(path)))

    def rotate(self, n):
        rotated = "%s.%d" % (self.log_file, n)
        os.rename(self.log_file, rotated)
        self.broker.reload()
        return rotated

    def test_sighup_reopens_renamed_log_file(self):
        self.raw("before-rotate")
        self.wait_file_line(self.log_file, r"before-rotate")
        rotated = self.rotate(1)
        self.wait_file_line(self.log_file, r"configuration reloaded")
        self.raw("after-rotate")
        self.wait_file_line(self.log_file, r"after-rotate")
        self.assertNotIn("after-rotate", self.read(rotated))
        self.assertIn("before-rotate", self.read(rotated))
        self.assertNotIn("before-rotate", self.read(self.log_file))

    def test_sighup_reopens_even_when_the_new_configuration_is_refused(self):
        """A configuration broken since start-up must not keep the broker
        writing into the rotated file."""
        self.broker.write_config("{ not json")
        rotated = self.rotate(1)
        self.wait_file_line(self.log_file, r"reload refused")
        self.raw("after-refused")
        self.wait_file_line(self.log_file, r"after-refused")
        self.assertNotIn("after-refused", self.read(rotated))


@skip_unless_wisp("wisp's --check-config")
class CheckConfigTest(unittest.TestCase):
    """--check-config and start-up agree: a configuration the check calls
    OK starts, and one start-up refuses is refused by the check with the
    same error line."""

    @classmethod
    def setUpClass(cls):
        if shutil.which("openssl") is None:
            raise AssertionError("the openssl command-line tool is required "
                                 "(Debian package openssl; scripts/deps.sh --test)")
        cls.certs = tempfile.mkdtemp(prefix="wisp-e2e-certs-")
        make_certs(cls.certs)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.certs, ignore_errors=True)

    def broker(self, **tls):
        base = {"cert": os.path.join(self.certs, "server.crt"),
                "key": os.path.join(self.certs, "server.key")}
        base.update(tls)
        b = Broker(listener={"protocol": "mqtts", "tls": base})
        self.addCleanup(b.cleanup)
        return b

    def check(self, b):
        b.port = 8883
        b.write_config(b.config())
        return run_wisp(["--check-config", b.config_path])

    def assert_same_refusal(self, b, reason_rx):
        cp = self.check(b)
        self.assertEqual(cp.returncode, 1, "--check-config accepted what start-up refuses:\n" + cp.stdout)
        status, log = b.start_failing()
        self.assertEqual(status, 1, log)
        check_line = cp.stdout.strip()
        self.assertRegex(check_line, reason_rx)
        self.assertIn("wisp: " + check_line, log, "start-up says the same, prefixed with wisp:")

    def test_positive_control_tls12(self):
        b = self.broker(min_version="tls1.2")
        cp = self.check(b)
        self.assertEqual(cp.returncode, 0, cp.stdout)
        self.assertIn("configuration OK", cp.stdout)
        with b:
            self.assertTrue(b.alive())

    def test_min_version_tls13_refused_by_check_as_at_start(self):
        """Debian's mbed TLS 2.28 has no server-side TLS 1.3: the check
        must not say "configuration OK" to what start-up refuses."""
        self.assert_same_refusal(self.broker(min_version="tls1.3"),
                                 r"listeners\[0\]\.tls\.min_version: tls1\.3")

    def test_unusable_certificate_refused_by_check_as_at_start(self):
        garbage = os.path.join(self.certs, "garbage.crt")
        with open(garbage, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        self.assert_same_refusal(self.broker(cert=garbage), r"listeners\[0\]\.tls\.cert")


class HarnessExitStatusTest(unittest.TestCase):
    """wisp_e2e.main()'s exit status, which CTest reads: 77 (skipped) when
    a test skipped and none failed; 1 when one failed; 0 when all passed.
    Against mosquitto, skip_unless_wisp skips are expected: still 0."""

    SCRIPT = """
import sys, unittest
sys.path.insert(0, %r)
from wisp_e2e import main, skip_unless_wisp

class T(unittest.TestCase):
    def test_pass(self):
        pass
%s

if __name__ == "__main__":
    main()
"""

    def run_script(self, body, broker="wisp"):
        d = tempfile.mkdtemp(prefix="wisp-e2e-harness-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "t.py")
        with open(path, "w") as f:
            f.write(self.SCRIPT % (os.path.dirname(os.path.abspath(__file__)), body))
        env = dict(os.environ, WISP_E2E_BROKER=broker)
        cp = subprocess.run([sys.executable, path], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, env=env, timeout=60)
        return cp.returncode, cp.stderr

    def test_all_pass_exits_0(self):
        self.assertEqual(self.run_script("")[0], 0)

    def test_a_skip_exits_77(self):
        rc, err = self.run_script("    def test_skip(self):\n        self.skipTest('no tool')\n")
        self.assertEqual(rc, 77, err)
        self.assertIn("no tool", err)

    def test_a_failure_with_a_skip_exits_1(self):
        rc, err = self.run_script("    def test_skip(self):\n        self.skipTest('no tool')\n"
                                  "    def test_fail(self):\n        self.fail('broken')\n")
        self.assertEqual(rc, 1, err)

    def test_module_skip_exits_77(self):
        rc, err = self.run_script("def setUpModule():\n    raise unittest.SkipTest('no openssl')\n")
        self.assertEqual(rc, 77, err)

    def test_skip_unless_wisp_against_mosquitto_exits_0(self):
        body = ("    @skip_unless_wisp('wisp only')\n"
                "    def test_wisp_only(self):\n        pass\n")
        self.assertEqual(self.run_script(body, broker="mosquitto")[0], 0)
        self.assertEqual(self.run_script(body, broker="wisp")[0], 0)


if __name__ == "__main__":
    main()
