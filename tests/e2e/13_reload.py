#!/usr/bin/python3
# ctest: TIMEOUT 180
"""13 reload: SIGHUP is all or nothing (issue 14, "SIGHUP, all or nothing";
config/README.md on SIGHUP, proto/reload.c).

- A reload with a bad TLS certificate together with a good new password
  file changes nothing: the new password does not work, the old one does,
  TLS still serves the old certificate, and the log says why the reload was
  refused. Fixing the certificate and reloading again applies both (the
  positive control: the same checks see the change when there is one).
- An ACL change cuts a live subscription: a subscriber to a/#, connected
  throughout, stops receiving a/secret once the reloaded ACL denies it,
  while a/public, published after a/secret, still arrives.
- Listeners are matched by address, port and protocol, not by their place
  in the file: removing the first of two listeners, or swapping two TLS
  listeners, leaves each running listener its own allow_anonymous and
  require_certificate (the operator probe's listener_shift.sh and
  mtls_swap.sh); the one no longer in the file keeps its settings and the
  log says it needs a restart, as Mosquitto 2.0.11 keeps refusing anonymous
  clients there.
- A key a reload does not apply (limits, persistence, sys_interval, a
  listener's max_connections) is logged with its path, old and new value
  and "needs a restart", and keeps its running value: a packet over the
  old max_packet_size still closes its connection. Keys it applies
  (log.level) are not logged so.
- The command line still holds after a reload: -p is not read as a
  listener that moved (no "needs a restart", the listener's new
  allow_anonymous applies) and -v keeps debug lines coming although the
  file says notice.
- SIGUSR1 and SIGUSR2 (Mosquitto: save the database, print the
  subscription tree) do not end the broker: each logs one line, SIGUSR2
  the counts of sessions, subscriptions and retained messages.

Every step waits for the broker's log line ("configuration reloaded" or
"reload refused"), never for a delay.
"""

import copy
import hashlib
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (Broker, BrokerTestCase, Closed, RawClient, client_tls_context,  # noqa: E402
                      connect_pkt, free_port, main, make_certs, make_passwd, publish_pkt, skip_unless_wisp)

BAD_USER_OR_PASSWORD = 4
NOT_AUTHORIZED = 5
CERTS = None


def setUpModule():
    global CERTS
    if shutil.which("openssl") is None:
        raise AssertionError("the openssl command-line tool is required (scripts/deps.sh --test)")
    CERTS = tempfile.mkdtemp(prefix="wisp-e2e-reload-certs-")
    make_certs(CERTS)


def tearDownModule():
    if CERTS:
        shutil.rmtree(CERTS, ignore_errors=True)


def fingerprint(der):
    return hashlib.sha256(der).hexdigest()


def leaf_der(path):
    with open(path) as f:
        pem = f.read()
    end = "-----END CERTIFICATE-----"
    return ssl.PEM_cert_to_DER_cert(pem[:pem.index(end) + len(end)] + "\n")


def replace_file(path, text):
    with open(path + ".new", "w") as f:
        f.write(text)
    os.replace(path + ".new", path)  # the broker never reads half a file


class ReloadCase(BrokerTestCase):

    def reload_and_wait(self, pattern):
        """SIGHUP, then the log line matching pattern (bounded); returns it."""
        offset = self.broker.log_size()
        self.broker.reload()
        line = self.broker.wait_log(r"configuration reloaded|reload refused", offset, timeout=10)
        self.assertIsNotNone(line, "the reload was not logged")
        self.assertRegex(line, pattern)
        return line


@skip_unless_wisp("wisp's reload log lines and all-or-nothing reload")
class AllOrNothingTest(ReloadCase):

    def broker_options(self):
        self.dir = tempfile.mkdtemp(prefix="wisp-e2e-reload-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        for f in ("ca.crt", "ca.key", "server.crt", "server.key"):
            shutil.copy2(os.path.join(CERTS, f), self.dir)
        self.passwd = make_passwd(os.path.join(self.dir, "passwd"), {"alice": "old-pw"})
        self.tls = {"cert": os.path.join(self.dir, "server.crt"),
                    "key": os.path.join(self.dir, "server.key")}
        return {"listener": {"protocol": "mqtts", "tls": dict(self.tls)},
                "config": {"auth": {"password_file": self.passwd}}}

    def tls_client(self):
        c = RawClient(self.broker.port, tls=client_tls_context(os.path.join(self.dir, "ca.crt")))
        self.on_cleanup(c.close)
        return c

    def login(self, password):
        """(CONNACK code, server certificate fingerprint) of a new TLS login as alice."""
        c = self.tls_client()
        seen = fingerprint(c.sock.getpeercert(binary_form=True))
        rc = c.connect("alice-%s" % password, username="alice", password=password)
        c.close()
        return rc, seen

    def test_bad_certificate_keeps_old_password_file_and_certificate(self):
        old_fp = fingerprint(leaf_der(os.path.join(self.dir, "server.crt")))
        live = self.tls_client()
        self.assertEqual(live.connect("live", username="alice", password="old-pw"), 0)
        self.assertEqual(live.subscribe([("r/t", 1)]), [1])
        self.assertEqual(self.login("old-pw"), (0, old_fp))

        # A good new password file and, in the same reload, an unusable certificate.
        make_passwd(self.passwd + ".next", {"alice": "new-pw"})
        os.replace(self.passwd + ".next", self.passwd)
        bad = os.path.join(self.dir, "bad.crt")
        with open(bad, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
        cfg = copy.deepcopy(self.broker.config())
        cfg["listeners"][0]["tls"]["cert"] = bad
        self.broker.write_config(cfg)
        line = self.reload_and_wait(r"reload refused, keeping the running configuration")
        self.assertIn("listeners[0].tls", line, "the refusal does not name the listener's TLS settings")
        self.assertIn(bad, line, "the refusal does not name the certificate file")
        self.assertEqual(self.login("new-pw"), (BAD_USER_OR_PASSWORD, old_fp),
                         "the new password file was applied by a refused reload")
        self.assertEqual(self.login("old-pw"), (0, old_fp))
        live.ping()

        # Positive control: with a usable new certificate the same reload applies both.
        make_certs(self.dir, "--force", "server")
        new_fp = fingerprint(leaf_der(os.path.join(self.dir, "server.crt")))
        self.assertNotEqual(new_fp, old_fp)
        self.broker.write_config(self.broker.config())  # back to server.crt
        self.reload_and_wait(r"configuration reloaded")
        self.assertEqual(self.login("new-pw"), (0, new_fp))
        self.assertEqual(self.login("old-pw"), (BAD_USER_OR_PASSWORD, new_fp))
        live.ping()  # a connection opened before keeps its TLS session


ACL_BEFORE = "topic read a/#\ntopic write a/#\n"
ACL_AFTER = "topic read a/#\ntopic write a/#\ntopic deny a/secret\n"


@skip_unless_wisp("wisp re-checks live subscriptions against a reloaded ACL")
class AclCutsLiveSubscriptionTest(ReloadCase):

    def broker_options(self):
        self.dir = tempfile.mkdtemp(prefix="wisp-e2e-reload-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.acl = os.path.join(self.dir, "acl")
        replace_file(self.acl, ACL_BEFORE)
        return {"config": {"auth": {"acl_file": self.acl}}}

    def test_acl_reload_cuts_a_live_subscription(self):
        """A subscriber to a/#, connected throughout, receives a/secret
        before the reload; after a reload whose ACL denies a/secret it
        receives a/public (published after a/secret) and never a/secret."""
        sub = self.raw("live-sub")
        self.assertEqual(sub.subscribe([("a/#", 1)]), [1])
        pub = self.raw("live-pub")
        pub.publish("a/secret", b"before", qos=1, pid=1)
        got = sub.recv_publish()
        self.assertEqual((got.topic, got.payload), ("a/secret", b"before"))

        replace_file(self.acl, ACL_AFTER)
        self.reload_and_wait(r"configuration reloaded")
        pub.publish("a/secret", b"after", qos=1, pid=2)  # acknowledged, not delivered
        pub.publish("a/public", b"control", qos=1, pid=3)
        got = sub.recv_publish()
        self.assertEqual((got.topic, got.payload), ("a/public", b"control"),
                         "the reloaded ACL did not cut a/secret from the live subscription")
        # Both were routed in order, so nothing else can be in flight for sub.
        sub.ping()
        self.assertTrue(pub.is_open() and sub.is_open())


class TwoListenerBroker(Broker):
    """A broker with listeners [first, second]: first on self.port (which
    start() waits for), second on self.port2."""

    def __init__(self, first, second, config):
        super().__init__(config=config)
        self.first, self.second = first, second
        self.port2 = free_port()

    def listeners(self):
        return (dict(self.first, bind="127.0.0.1", port=self.port),
                dict(self.second, bind="127.0.0.1", port=self.port2))

    def config(self):
        cfg = {"listeners": list(self.listeners()), "log": {"level": "debug"}}
        cfg.update(self.extra_config)
        return cfg


class ListenerIdentityCase(ReloadCase):
    FIRST = SECOND = None

    def config(self):
        return {}

    def setUp(self):
        self._closers = []
        self.dir = tempfile.mkdtemp(prefix="wisp-e2e-reload-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.broker = TwoListenerBroker(self.FIRST, self.SECOND, self.config())
        self.broker.start()

    def reload_with(self, listeners):
        cfg = self.broker.config()
        cfg["listeners"] = list(listeners)
        self.broker.write_config(cfg)
        offset = self.broker.log_size()
        self.reload_and_wait(r"configuration reloaded")
        return self.broker.log_since(offset)


@skip_unless_wisp("wisp's reload log lines")
class RemovedListenerKeepsItsSettingsTest(ListenerIdentityCase):
    FIRST = {"allow_anonymous": False}
    SECOND = {"allow_anonymous": True}

    def config(self):
        return {"auth": {"password_file": make_passwd(os.path.join(self.dir, "passwd"), {"alice": "pw"})}}

    def anonymous(self, port):
        c = RawClient(port)
        self.on_cleanup(c.close)
        return c.connect("anon-%d" % port)

    def test_removing_the_first_listener_moves_no_setting(self):
        """The file loses listeners[0] (no anonymous); the running first
        listener still refuses anonymous clients and the log says removing
        it needs a restart; the second still accepts them."""
        first, second = self.broker.listeners()
        self.assertEqual(self.anonymous(first["port"]), NOT_AUTHORIZED)
        self.assertEqual(self.anonymous(second["port"]), 0)
        log = self.reload_with([second])
        self.assertEqual(self.anonymous(first["port"]), NOT_AUTHORIZED,
                         "the second listener's allow_anonymous landed on the first")
        self.assertEqual(self.anonymous(second["port"]), 0)
        self.assertRegex(log, r"listener 127\.0\.0\.1 port %d \(mqtt\) is not in .* any more; "
                              r"closing it needs a restart" % first["port"])

    def test_reordered_listeners_keep_their_own_settings(self):
        """The same two listeners in the other order: each keeps its own
        allow_anonymous. Then, still in that order, the two exchange their
        values, and each listener takes its own (the positive control)."""
        first, second = self.broker.listeners()
        log = self.reload_with([second, first])
        self.assertEqual(self.anonymous(first["port"]), NOT_AUTHORIZED,
                         "the second listener's allow_anonymous landed on the first")
        self.assertEqual(self.anonymous(second["port"]), 0)
        self.assertNotIn("needs a restart", log)
        self.reload_with([dict(second, allow_anonymous=False), dict(first, allow_anonymous=True)])
        self.assertEqual(self.anonymous(first["port"]), 0)
        self.assertEqual(self.anonymous(second["port"]), NOT_AUTHORIZED)

    def test_a_new_listener_is_named_as_needing_a_restart(self):
        first, second = self.broker.listeners()
        extra = free_port()
        log = self.reload_with([first, second, {"bind": "127.0.0.1", "port": extra}])
        self.assertRegex(log, r"listeners\[2\] \(127\.0\.0\.1 port %d, mqtt\) is not running; "
                              r"opening it needs a restart" % extra)
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", extra), timeout=2).close()


@skip_unless_wisp("wisp's reload log lines")
class SwappedTlsListenersTest(ListenerIdentityCase):

    def setUp(self):
        self.certs = os.path.join(CERTS, "ca.crt")
        tls = {"cert": os.path.join(CERTS, "server.crt"), "key": os.path.join(CERTS, "server.key")}
        self.FIRST = {"protocol": "mqtts", "tls": dict(tls, ca=self.certs, require_certificate=True)}
        self.SECOND = {"protocol": "mqtts", "tls": dict(tls)}
        super().setUp()

    def login(self, port, client=None):
        """CONNACK code of a TLS login without (or with) a client
        certificate, or None when the broker refuses the handshake."""
        files = (os.path.join(CERTS, client + ".crt"), os.path.join(CERTS, client + ".key")) if client else ()
        try:
            c = RawClient(port, tls=client_tls_context(self.certs, *files))
        except (ssl.SSLError, ConnectionError):
            return None
        self.on_cleanup(c.close)
        try:
            return c.connect("tls-%d" % port)
        except (Closed, ssl.SSLError, ConnectionError):
            return None

    def test_swapped_tls_listeners_keep_their_client_certificate_rule(self):
        """The two TLS listeners listed in the other order: the one with
        require_certificate still refuses a client without a certificate
        and accepts one with it; the other still needs none."""
        make_certs(CERTS, "client", "sensor-reload")
        first, second = self.broker.listeners()
        self.assertIsNone(self.login(first["port"]))
        self.assertEqual(self.login(second["port"]), 0)
        self.reload_with([second, first])
        self.assertIsNone(self.login(first["port"]),
                          "the other listener's TLS context (no client certificate) landed on it")
        self.assertEqual(self.login(first["port"], "sensor-reload"), 0)
        self.assertEqual(self.login(second["port"]), 0)


@skip_unless_wisp("wisp's reload log lines")
class RestartOnlyKeysTest(ReloadCase):
    LIMITS = {"max_packet_size": 1000}

    def test_restart_only_keys_are_logged_and_kept(self):
        cfg = copy.deepcopy(self.broker.config())
        cfg["limits"]["max_packet_size"] = 100000
        cfg["persistence"] = {"fsync": "always"}
        cfg["sys_interval"] = 5
        cfg["listeners"][0]["max_connections"] = 7
        cfg["log"]["level"] = "info"
        self.broker.write_config(cfg)
        offset = self.broker.log_size()
        self.reload_and_wait(r"configuration reloaded")
        log = self.broker.log_since(offset)
        for line in (r"limits\.max_packet_size changed from 1000 to 100000: needs a restart",
                     r"persistence\.fsync changed from \"everysec\" to \"always\": needs a restart",
                     r"sys_interval changed from 10 to 5: needs a restart",
                     r"listeners\[0\]\.max_connections changed from 0 to 7: needs a restart"):
            self.assertRegex(log, r"WARNING \[main\] reload: " + line)
        self.assertNotRegex(log, r"log\.level changed")
        c = self.raw("big")
        c.send(publish_pkt("t", b"x" * 2000))
        self.assertTrue(c.wait_closed(), "max_packet_size 100000 was applied by the reload")


class PortOverrideBroker(Broker):
    """wisp -c FILE -v -p PORT, where FILE's listener says another port."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.file_port = free_port()

    def config(self):
        cfg = super().config()
        cfg["listeners"][0]["port"] = self.file_port
        cfg["log"]["level"] = "notice"
        return cfg

    def _write_config(self):
        return super()._write_config() + ["-p", str(self.port)]


@skip_unless_wisp("wisp's reload log lines")
class CommandLineOverReloadTest(ReloadCase):

    def setUp(self):
        self._closers = []
        self.dir = tempfile.mkdtemp(prefix="wisp-e2e-reload-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        passwd = make_passwd(os.path.join(self.dir, "passwd"), {"alice": "pw"})
        self.broker = PortOverrideBroker(listener={"allow_anonymous": True},
                                         config={"auth": {"password_file": passwd}})
        self.broker.start()

    def test_port_and_verbose_survive_a_reload(self):
        c = RawClient(self.broker.port)
        self.on_cleanup(c.close)
        self.assertEqual(c.connect("anon-before"), 0)
        cfg = self.broker.config()
        cfg["listeners"][0]["allow_anonymous"] = False
        self.broker.write_config(cfg)
        offset = self.broker.log_size()
        self.reload_and_wait(r"configuration reloaded")
        log = self.broker.log_since(offset)
        self.assertNotIn("needs a restart", log, "-p was read as a listener moved")
        self.assertIn("allow_anonymous is now false", log)
        offset = self.broker.log_size()
        c = RawClient(self.broker.port)
        self.on_cleanup(c.close)
        self.assertEqual(c.connect("anon-after"), NOT_AUTHORIZED)
        self.assertIsNotNone(self.broker.wait_log(r"DEBUG ", offset),
                             "no debug line after the reload: -v was dropped")


@skip_unless_wisp("wisp's log lines for SIGUSR1 and SIGUSR2")
class UserSignalsTest(BrokerTestCase):

    def signal_and_wait(self, sig, pattern):
        offset = self.broker.log_size()
        self.broker.proc.send_signal(sig)
        line = self.broker.wait_log(pattern, offset, timeout=10)
        self.assertIsNotNone(line, "no log line for %s:\n%s" % (sig.name, self.broker.log_since(offset)))
        return line

    def test_sigusr1_and_sigusr2_log_and_the_broker_serves_on(self):
        """With one client subscribed to two filters and a retained
        message: SIGUSR1 logs that there is nothing to save, SIGUSR2 logs
        the counts; the client is served afterwards and the broker exits 0
        on SIGTERM (tearDown)."""
        c = self.raw("usr-sub")
        self.assertEqual(c.subscribe([("a/#", 0), ("b", 0)]), [0, 0])
        c.publish("r", b"kept", retain=True)
        self.signal_and_wait(signal.SIGUSR1, r"SIGUSR1 received: nothing to save")
        self.signal_and_wait(signal.SIGUSR2, r"SIGUSR2 received: 1 sessions \(1 connected\), 2 subscriptions, "
                                             r"\d+ retained messages \(\$SYS ones included\)")
        c.ping()
        self.assertTrue(self.broker.alive())


if __name__ == "__main__":
    main()
