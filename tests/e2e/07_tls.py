#!/usr/bin/python3
"""07 tls: MQTT over TLS (mqtts listeners).

Certificates are made for this run only, in a temp dir, by
certs/make-certs.sh: a CA, the server certificate (SAN localhost,
127.0.0.1, ::1), CA-signed client certificates, a self-signed one and an
expired one. Each test copies the CA and server pair into its own dir, so a
test can renew the server certificate without disturbing the others.

Covers: mosquitto_pub/mosquitto_sub with --cafile/--cert/--key, paho over
TLS, mutual TLS (CA-signed accepted, self-signed and missing refused),
plaintext and stalled handshakes dropped by limits.connect_timeout while
other TLS clients keep working, SIGHUP reload of a renewed certificate,
use_identity_as_username seen through an ACL, and start-up refusal of
missing, mismatched and expired certificates.
"""

import hashlib
import os
import shutil
import socket
import ssl
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (IO_TIMEOUT, IS_MOSQUITTO, Broker, BrokerTestCase, Closed, RawClient,  # noqa: E402
                      client_tls_context, connect_pkt, main, make_certs, paho_get,
                      paho_subscribe, run_wisp, skip_unless_wisp)

CONNECT_TIMEOUT = 2  # limits.connect_timeout for these brokers, seconds
# A dropped handshake must be closed within the timeout plus this slack.
CLOSE_SLACK = 3.0

CERTS = None  # the run's certificate dir, made by setUpModule

# How mosquitto_pub ends when the broker refuses its client certificate, as
# (exit status, stderr); each set holds every outcome seen in 10 runs (which
# one is timing). wisp (mbedTLS, TLS 1.2) refuses during the handshake;
# Debian's mosquitto (OpenSSL, TLS 1.3) after the client's side of it.
REFUSED_IN_HANDSHAKE = {(8, "Error: A TLS error occurred.\n"),
                        (1, "Unable to connect (A TLS error occurred.).\n")}
REFUSED_AFTER_HANDSHAKE = {(1, "Error: Protocol error\n"), (7, "Error: The connection was lost.\n")}


def setUpModule():
    global CERTS
    if shutil.which("openssl") is None:
        # A failure, not a skip: 27 skipped tests used to pass as green.
        raise AssertionError("the openssl command-line tool is required: install the Debian "
                             "package openssl (scripts/deps.sh --test)")
    CERTS = tempfile.mkdtemp(prefix="wisp-e2e-certs-")
    make_certs(CERTS)
    for name in ("sensor-0001", "sensor-0002", "dashboard"):
        make_certs(CERTS, "client", name)
    make_certs(CERTS, "selfsigned", "rogue")
    make_certs(CERTS, "expired", "old")
    make_certs(CERTS, "notyet", "future")


def tearDownModule():
    if CERTS:
        shutil.rmtree(CERTS, ignore_errors=True)


def cert(name):
    return os.path.join(CERTS, name + ".crt")


def key(name):
    return os.path.join(CERTS, name + ".key")


def leaf_der(path):
    """DER of the first certificate of a PEM file."""
    with open(path) as f:
        pem = f.read()
    end = "-----END CERTIFICATE-----"
    return ssl.PEM_cert_to_DER_cert(pem[:pem.index(end) + len(end)] + "\n")


def fingerprint(der):
    return hashlib.sha256(der).hexdigest()


def half_client_hello():
    """The first half of a real TLS ClientHello record."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    assert hello[:1] == b"\x16" and len(hello) > 100, hello[:16]
    return hello[:len(hello) // 2]


class TlsCase(BrokerTestCase):
    """A broker with one mqtts listener; TLS_OPTIONS are extra tls keys.
    self.tls_dir holds this test's copy of ca.crt/ca.key/server.crt/server.key."""

    LIMITS = {"connect_timeout": CONNECT_TIMEOUT}
    TLS_OPTIONS = {}
    ACL = None  # ACL file text, or None for no ACL

    def broker_options(self):
        self.tls_dir = tempfile.mkdtemp(prefix="wisp-e2e-tls-")
        self.addCleanup(shutil.rmtree, self.tls_dir, True)
        for f in ("ca.crt", "ca.key", "server.crt", "server.key"):
            shutil.copy2(os.path.join(CERTS, f), self.tls_dir)
        tls = {"cert": os.path.join(self.tls_dir, "server.crt"),
               "key": os.path.join(self.tls_dir, "server.key"),
               "ca": os.path.join(self.tls_dir, "ca.crt")}
        tls.update(self.TLS_OPTIONS)
        opts = {"listener": {"protocol": "mqtts", "tls": tls}}
        if self.ACL is not None:
            acl = os.path.join(self.tls_dir, "acl")
            with open(acl, "w") as f:
                f.write(self.ACL)
            opts["config"] = {"auth": {"acl_file": acl}}
        return opts

    @property
    def ca(self):
        return os.path.join(self.tls_dir, "ca.crt")

    def ctx(self, client=None):
        """A client TLS context trusting the CA, with client NAME's certificate."""
        if client is None:
            return client_tls_context(self.ca)
        return client_tls_context(self.ca, cert(client), key(client))

    def assert_mosquitto_pub_refused(self, client):
        """mosquitto_pub with client certificate `client` (None: none) fails
        exactly as a refused certificate makes it fail."""
        cp = self.pub("mtls/x", "nope", qos=1, extra=self.tls_args(client), check=False)
        self.assertIn((cp.returncode, cp.stderr.decode(errors="replace")),
                      REFUSED_AFTER_HANDSHAKE if IS_MOSQUITTO else REFUSED_IN_HANDSHAKE)

    def tls_args(self, client=None):
        """mosquitto_pub/mosquitto_sub TLS options."""
        args = ["--cafile", self.ca]
        if client is not None:
            args += ["--cert", cert(client), "--key", key(client)]
        return args

    def tls_raw(self, client_id=None, client=None, **kw):
        return self.raw(client_id, tls=self.ctx(client), **kw)

    def assert_tls_refused(self, ctx, what):
        """The broker refuses: a TLS alert (ssl.SSLError) or a closed or reset
        connection, during the handshake (TLS 1.2) or, should the handshake
        complete on the client's side (TLS 1.3 checks the client certificate
        after that), before any CONNACK. Silence is not a refusal: a timeout
        at either step fails the test (a hung broker must not pass)."""
        try:
            c = RawClient(self.broker.port, tls=ctx)
        except (ssl.SSLError, ConnectionError):
            return
        except socket.timeout:
            self.fail("%s: the TLS handshake neither completed nor failed within %ss" % (what, IO_TIMEOUT))
        self.on_cleanup(c.close)
        try:
            c.send(connect_pkt("refused"))
            pkt = c.recv_packet()
        except (Closed, ssl.SSLError, ConnectionError):
            return
        except socket.timeout:
            self.fail("%s: no alert, close or CONNACK within %ss of CONNECT" % (what, IO_TIMEOUT))
        self.fail("%s: the broker answered %r" % (what, pkt))

    def assert_working(self, witness, tag):
        """witness (a connected TLS client subscribed to 'w/#' at QoS 1) still
        answers PINGREQ and receives what a new TLS client publishes."""
        self.assert_broker_alive()
        witness.ping()
        with RawClient(self.broker.port, tls=self.ctx(self.WITNESS_CERT)) as p:
            self.assertEqual(p.connect("pub-" + tag), 0)
            p.publish("w/" + tag, tag, qos=1)
        got = witness.recv_publish()
        self.assertEqual((got.topic, got.payload), ("w/" + tag, tag.encode()))

    WITNESS_CERT = None

    def witness(self):
        w = self.tls_raw("witness", client=self.WITNESS_CERT, keepalive=0)
        self.assertEqual(w.subscribe([("w/#", 1)]), [1])
        return w


class ServerTlsTest(TlsCase):
    """Server authentication only (require_certificate false)."""

    def test_mosquitto_sub_receives_mosquitto_pub_over_tls(self):
        """mosquitto_sub --cafile receives what mosquitto_pub --cafile
        publishes at QoS 0, 1 and 2 over the mqtts listener."""
        s = self.sub("tls/#", qos=2, extra=self.tls_args()).wait_subscribed()
        for q in (0, 1, 2):
            self.pub("tls/q%d" % q, "m%d" % q, qos=q, extra=self.tls_args())
        got = sorted(s.get() for _ in range(3))
        self.assertEqual(got, [("tls/q%d" % q, False, q, "m%d" % q) for q in (0, 1, 2)])

    def test_mosquitto_pub_with_client_certificate(self):
        """A client certificate is accepted where it is optional."""
        s = self.sub("tlsc/t", extra=self.tls_args()).wait_subscribed()
        self.pub("tlsc/t", "with-cert", qos=1, extra=self.tls_args("sensor-0001"))
        self.assertEqual(s.get(), ("tlsc/t", False, 0, "with-cert"))

    def test_paho_over_tls(self):
        """paho with tls_set(ca_certs=...) connects (verifying the server
        certificate and host name 127.0.0.1), subscribes and receives its own
        QoS 1 publish."""
        c = self.paho("paho-tls", tls={"ca_certs": self.ca})
        self.assertEqual(paho_subscribe(c, [("ptls/t", 1)]), [1])
        c.publish("ptls/t", "over-tls", qos=1).wait_for_publish(timeout=5)
        m = paho_get(c)
        self.assertEqual((m.topic, m.payload, m.qos), ("ptls/t", b"over-tls", 1))

    def test_paho_localhost_name(self):
        """The server certificate also matches the name localhost."""
        c = self.paho("paho-tls-name", tls={"ca_certs": self.ca}, host="localhost")
        self.assertEqual(paho_subscribe(c, [("pn/t", 0)]), [0])

    def test_server_certificate_is_the_configured_one(self):
        """The certificate presented is the configured server.crt, and
        the TLS version is at least 1.2."""
        c = self.tls_raw()
        self.assertEqual(fingerprint(c.sock.getpeercert(binary_form=True)),
                         fingerprint(leaf_der(os.path.join(self.tls_dir, "server.crt"))))
        self.assertIn(c.sock.version(), ("TLSv1.2", "TLSv1.3"))

    def test_untrusted_server_refused_by_client(self):
        """Sanity check of the client side: a client trusting another CA
        (the self-signed 'rogue' certificate) refuses the server."""
        with self.assertRaises(ssl.SSLError):
            RawClient(self.broker.port, tls=client_tls_context(cert("rogue")))

    def test_plaintext_mqtt_to_tls_port_dropped(self):
        """A plaintext CONNECT to the TLS port gets no CONNACK and is closed
        within limits.connect_timeout; a TLS client connected throughout
        keeps working."""
        w = self.witness()
        with RawClient(self.broker.port) as plain:
            plain.send(connect_pkt("plain"))
            t0 = time.monotonic()
            closed = plain.wait_closed(CONNECT_TIMEOUT + CLOSE_SLACK)
            elapsed = time.monotonic() - t0
        self.assertTrue(closed, "plaintext connection still open after %.1f s" % elapsed)
        self.assert_working(w, "after-plain")

    @skip_unless_wisp("has no handshake/CONNECT timeout for a silent TLS connection")
    def test_silent_tcp_connection_dropped(self):
        """A TCP connection that never sends a byte is closed by
        limits.connect_timeout; meanwhile a TLS client connects, publishes
        and receives."""
        w = self.witness()
        silent = RawClient(self.broker.port)
        self.on_cleanup(silent.close)
        t0 = time.monotonic()
        self.assert_working(w, "during-silent")
        closed = silent.wait_closed(CONNECT_TIMEOUT + CLOSE_SLACK)
        elapsed = time.monotonic() - t0
        self.assertTrue(closed, "silent connection still open after %.1f s" % elapsed)
        self.assert_working(w, "after-silent")

    @skip_unless_wisp("has no handshake timeout for a stalled TLS handshake")
    def test_half_client_hello_dropped(self):
        """Half a ClientHello, then nothing: closed by limits.connect_timeout,
        while another TLS client keeps working."""
        w = self.witness()
        stalled = RawClient(self.broker.port)
        self.on_cleanup(stalled.close)
        stalled.send(half_client_hello())
        t0 = time.monotonic()
        self.assert_working(w, "during-half-hello")
        closed = stalled.wait_closed(CONNECT_TIMEOUT + CLOSE_SLACK)
        elapsed = time.monotonic() - t0
        self.assertTrue(closed, "stalled handshake still open after %.1f s" % elapsed)
        self.assert_working(w, "after-half-hello")

    @skip_unless_wisp("has no CONNECT timeout after the TLS handshake")
    def test_handshake_without_connect_dropped(self):
        """A complete TLS handshake followed by silence (no CONNECT) is also
        closed by limits.connect_timeout."""
        c = self.tls_raw(connect=False)
        self.assertTrue(c.wait_closed(CONNECT_TIMEOUT + CLOSE_SLACK),
                        "TLS connection without CONNECT still open")

    def test_many_stalled_handshakes_do_not_block(self):
        """20 half handshakes at once: a new TLS client still connects and
        round-trips a QoS 1 message while they are pending."""
        w = self.witness()
        hello = half_client_hello()
        for _ in range(20):
            s = RawClient(self.broker.port)
            self.on_cleanup(s.close)
            s.send(hello)
        self.assert_working(w, "many-stalled")


class ReloadTest(TlsCase):

    def test_sighup_reloads_renewed_certificate(self):
        """server.crt/server.key are replaced by a new pair (same CA) and the
        broker gets SIGHUP: new connections see the new certificate, while a
        connection opened before keeps working."""
        old_fp = fingerprint(leaf_der(os.path.join(self.tls_dir, "server.crt")))
        w = self.witness()
        self.assertEqual(fingerprint(w.sock.getpeercert(binary_form=True)), old_fp)
        make_certs(self.tls_dir, "--force", "server")
        new_fp = fingerprint(leaf_der(os.path.join(self.tls_dir, "server.crt")))
        self.assertNotEqual(new_fp, old_fp, "make-certs.sh did not renew the certificate")
        self.broker.reload()
        seen = None
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with RawClient(self.broker.port, tls=self.ctx()) as c:
                seen = fingerprint(c.sock.getpeercert(binary_form=True))
                self.assertEqual(c.connect("after-reload"), 0)
            if seen == new_fp:
                break
            time.sleep(0.1)
        self.assertEqual(seen, new_fp, "new connections still get the old certificate")
        self.assert_working(w, "after-reload")


class MutualTlsTest(TlsCase):
    """require_certificate true: mutual TLS."""

    TLS_OPTIONS = {"require_certificate": True}
    WITNESS_CERT = "sensor-0002"

    def test_ca_signed_client_certificate_accepted(self):
        """A client certificate signed by the CA: the raw client gets CONNACK 0
        and mosquitto_pub --cert/--key delivers to mosquitto_sub --cert/--key."""
        c = self.tls_raw(client="sensor-0001")
        c.ping()
        s = self.sub("mtls/t", qos=1, extra=self.tls_args("sensor-0002")).wait_subscribed()
        self.pub("mtls/t", "mutual", qos=1, extra=self.tls_args("sensor-0001"))
        self.assertEqual(s.get(), ("mtls/t", False, 1, "mutual"))

    def test_paho_mutual_tls(self):
        """paho with certfile/keyfile connects and round-trips a message."""
        c = self.paho("paho-mtls", tls={"ca_certs": self.ca, "certfile": cert("dashboard"),
                                        "keyfile": key("dashboard")})
        self.assertEqual(paho_subscribe(c, [("pm/t", 1)]), [1])
        c.publish("pm/t", "hello", qos=1).wait_for_publish(timeout=5)
        self.assertEqual(paho_get(c).payload, b"hello")

    def test_self_signed_client_certificate_refused(self):
        """A self-signed client certificate is refused (handshake alert or
        close before CONNACK); mosquitto_pub with it fails; a good client
        connected throughout keeps working."""
        w = self.witness()
        self.assert_tls_refused(client_tls_context(self.ca, cert("rogue"), key("rogue")),
                                "self-signed client certificate")
        self.assert_mosquitto_pub_refused("rogue")
        self.assert_working(w, "after-rogue")

    def test_missing_client_certificate_refused(self):
        """No client certificate at all is refused."""
        w = self.witness()
        self.assert_tls_refused(self.ctx(), "no client certificate")
        self.assert_mosquitto_pub_refused(None)
        self.assert_working(w, "after-nocert")

    def test_expired_client_certificate_refused(self):
        """A CA-signed but expired client certificate is refused."""
        w = self.witness()
        self.assert_tls_refused(client_tls_context(self.ca, cert("old"), key("old")),
                                "expired client certificate")
        self.assert_mosquitto_pub_refused("old")
        self.assert_working(w, "after-expired")


ACL_IDENTITY = """\
# Clients are named by their certificate's CN (use_identity_as_username).
user sensor-0001
topic write sensors/sensor-0001/#
topic readwrite cmd/sensor-0001

user dashboard
topic read sensors/#
"""


class IdentityAsUsernameTest(TlsCase):
    """use_identity_as_username: the client certificate's CN is the user
    name the ACL sees."""

    TLS_OPTIONS = {"require_certificate": True, "use_identity_as_username": True}
    ACL = ACL_IDENTITY

    def dashboard(self):
        d = self.tls_raw("dash", client="dashboard")
        self.assertEqual(d.subscribe([("sensors/#", 1)]), [1])
        return d

    def test_cn_may_publish_only_its_own_tree(self):
        """CN=sensor-0001 publishes to sensors/sensor-0001/temp (delivered to
        the dashboard) and to sensors/sensor-0002/temp (acknowledged with
        PUBACK, not delivered)."""
        d = self.dashboard()
        s = self.tls_raw("s1", client="sensor-0001")
        s.publish("sensors/sensor-0002/temp", "spoof", qos=1, pid=1)
        s.publish("sensors/sensor-0001/temp", "21.5", qos=1, pid=2)
        got = d.recv_publish()
        self.assertEqual((got.topic, got.payload), ("sensors/sensor-0001/temp", b"21.5"))
        d.assert_no_packet(0.5)

    def test_connect_user_name_is_ignored(self):
        """The CN wins over the CONNECT user name: sensor-0001 claiming to be
        'dashboard' may still not subscribe to sensors/# (SUBACK 0x80) nor
        receive what the real dashboard receives."""
        d = self.dashboard()
        s = self.tls_raw("s1-claims-dashboard", client="sensor-0001", username="dashboard",
                         password="x")
        codes = s.subscribe([("sensors/#", 1), ("cmd/sensor-0001", 1)])
        # mosquitto 2.0.11 grants sensors/#, then filters deliveries
        self.assertEqual(codes, [1, 1] if IS_MOSQUITTO else [0x80, 1])
        with RawClient(self.broker.port, tls=self.ctx("sensor-0001")) as p:
            self.assertEqual(p.connect("s1-pub"), 0)
            p.publish("sensors/sensor-0001/x", "only-dashboard", qos=1, pid=1)
            p.publish("cmd/sensor-0001", "control", qos=1, pid=2)
        self.assertEqual(d.recv_publish().payload, b"only-dashboard")
        # The control, published after on the same connection, is the first
        # thing s gets: the dashboard's message was not delivered to it.
        got = s.recv_publish()
        self.assertEqual((got.topic, got.payload), ("cmd/sensor-0001", b"control"))

    def test_mosquitto_pub_identity(self):
        """mosquitto_pub --cert sensor-0001 reaches mosquitto_sub --cert
        dashboard on its own topic only."""
        sub = self.sub("sensors/#", qos=1, extra=self.tls_args("dashboard")).wait_subscribed()
        self.pub("sensors/sensor-0002/x", "no", qos=1, extra=self.tls_args("sensor-0001"))
        self.pub("sensors/sensor-0001/x", "yes", qos=1, extra=self.tls_args("sensor-0001"))
        self.assertEqual(sub.get(), ("sensors/sensor-0001/x", False, 1, "yes"))
        sub.assert_nothing(0.5)


@skip_unless_wisp("start-up error wording differs")
class StartupRefusalTest(unittest.TestCase):
    """The broker refuses to start (exit status 1) with a bad certificate
    or key, naming the key path and the reason."""

    def refused(self, tls, key_rx, reason):
        """key_rx: regex of the key path; reason: regex of the reason."""
        base = {"cert": cert("server"), "key": key("server"), "ca": cert("ca")}
        base.update(tls)
        b = Broker(listener={"protocol": "mqtts", "tls": base})
        self.addCleanup(b.cleanup)
        status, log = b.start_failing()
        self.assertEqual(status, 1, "exit status\n" + log)
        self.assertRegex(log, r"(?i)%s.*(%s)" % (key_rx, reason),
                         "the error must name the key path and the reason")

    def test_missing_cert_file(self):
        self.refused({"cert": os.path.join(CERTS, "nonexistent.crt")},
                     r"listeners\[0\]\.tls\.cert", "not found|no such file|cannot|unreadable")

    def test_missing_key_file(self):
        self.refused({"key": os.path.join(CERTS, "nonexistent.key")},
                     r"listeners\[0\]\.tls\.key", "not found|no such file|cannot|unreadable")

    def test_key_does_not_match_certificate(self):
        self.refused({"key": key("sensor-0001")}, r"listeners\[0\]\.tls\.(key|cert)",
                     "match")

    def test_expired_certificate(self):
        self.refused({"cert": cert("old"), "key": key("old")}, r"listeners\[0\]\.tls\.cert",
                     "expired")

    def test_not_yet_valid_certificate(self):
        self.refused({"cert": cert("future"), "key": key("future")}, r"listeners\[0\]\.tls\.cert",
                     "not yet valid|not valid before|future")

    def test_garbage_certificate(self):
        garbage = os.path.join(CERTS, "garbage.crt")
        with open(garbage, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
        self.refused({"cert": garbage}, r"listeners\[0\]\.tls\.cert", "pem|parse|invalid|certificate")

    def test_check_config_reports_missing_cert(self):
        """wisp --check-config names the missing file's key path, exit 1."""
        b = Broker(listener={"protocol": "mqtts",
                             "tls": {"cert": os.path.join(CERTS, "nonexistent.crt"),
                                     "key": key("server")}})
        self.addCleanup(b.cleanup)
        b.port = 8883
        b.write_config(b.config())
        cp = run_wisp(["--check-config", b.config_path])
        self.assertEqual(cp.returncode, 1, cp.stdout)
        self.assertIn("listeners[0].tls.cert", cp.stdout)


if __name__ == "__main__":
    main()
