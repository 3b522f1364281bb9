#!/usr/bin/python3
# ctest: TIMEOUT 240
"""30 cluster NATS TLS and credentials (issue 16: "NATS URLs (with TLS and
credentials options)"). nats-server with TLS and user/password, token,
NKey or client-certificate authorization, on loopback, with certificates
made by certs/make-certs.sh into a temporary directory, and an operator-mode
nats-server whose JWTs and .creds files the test makes as nsc would. What a user sees:
two nodes join over TLS with their credentials and a QoS 1 message crosses
from one to the other, each of a node's NATS connections (core,
shared-subscription, JetStream) is a TLS one; a node with the wrong CA,
the wrong password, no client certificate where one is required, or TLS
configured against a server without TLS is refused, says why in its log,
and still serves its local clients; passwords and tokens never appear in
the log; a missing credentials file, a PEM file libnats cannot load and a
seed that is not the configured NKey's are refused at start (and by
--check-config) with the key path.

nats-server and openssl must be installed (WISP_NATS_SERVER, WISP_OPENSSL):
a missing one fails the test, never skips it."""

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import IO_TIMEOUT, main, run_wisp  # noqa: E402
from wisp_cluster import NATS_BIN, SELECTIVE, ClusterCase, Nats, Node  # noqa: E402

WAIT = 20.0  # seconds any awaited cluster event may take
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASSWORD = "pw-4c1d-never-logged"
TOKEN = "tok-9e7f-never-logged"


def crc16_xmodem(data):
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def nkey_encode(prefix, payload):
    raw = bytes(prefix) + payload
    crc = crc16_xmodem(raw)
    return base64.b32encode(raw + bytes([crc & 0xFF, crc >> 8])).decode().rstrip("=")


def nkey_pair(prefix):
    """(private key, public key string, seed string) of a new NKey of the
    kind prefix names (14 << 3 operator, 0 account, 20 << 3 user)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    raw = os.urandom(32)
    key = Ed25519PrivateKey.from_private_bytes(raw)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return key, nkey_encode([prefix], public), nkey_encode([(18 << 3) | (prefix >> 5), (prefix & 31) << 3], raw)


def nats_jwt(signer, issuer, subject, name, nats):
    """A NATS v2 JWT (nats-io/jwt): base64url header, claims and the issuer's
    Ed25519 signature of the two."""
    def b64(data):
        return base64.urlsafe_b64encode(data).decode().rstrip("=")
    claims = {"jti": "", "iat": int(time.time()), "iss": issuer, "name": name, "sub": subject, "nats": nats}
    digest = hashlib.new("sha512_256", json.dumps(claims).encode()).digest()
    claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
    head = b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = b64(json.dumps(claims).encode())
    return head + "." + body + "." + b64(signer.sign((head + "." + body).encode()))


def make_operator():
    """nats-server's operator mode as `nsc` sets it up (Debian has no nsc):
    an operator, a system account and an account with JetStream, preloaded.
    Returns (server configuration lines, account key, account public key)."""
    op_key, op_pub, _ = nkey_pair(14 << 3)
    sys_key, sys_pub, _ = nkey_pair(0)
    acc_key, acc_pub, _ = nkey_pair(0)
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
                 "conn": -1, "leaf": -1}
    perms = {"pub": {}, "sub": {}}
    op_jwt = nats_jwt(op_key, op_pub, op_pub, "op", {"type": "operator", "version": 2})
    sys_jwt = nats_jwt(op_key, op_pub, sys_pub, "SYS", {"limits": unlimited, "default_permissions": perms,
                                                       "type": "account", "version": 2})
    acc_jwt = nats_jwt(op_key, op_pub, acc_pub, "wisp",
                       {"limits": dict(unlimited, mem_storage=-1, disk_storage=-1, streams=-1, consumer=-1),
                        "default_permissions": perms, "type": "account", "version": 2})
    lines = ["operator: %s" % op_jwt, "system_account: %s" % sys_pub, "resolver: MEMORY",
             "resolver_preload: {", "  %s: %s" % (sys_pub, sys_jwt), "  %s: %s" % (acc_pub, acc_jwt), "}"]
    return lines, acc_key, acc_pub


def write_creds(path, acc_key, acc_pub):
    """A .creds file as nsc writes it, for a new user of the account."""
    _, user_pub, user_seed = nkey_pair(20 << 3)
    user_jwt = nats_jwt(acc_key, acc_pub, user_pub, "node",
                        {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2})
    with open(path, "w") as f:
        f.write("-----BEGIN NATS USER JWT-----\n%s\n------END NATS USER JWT------\n\n"
                "************************* IMPORTANT *************************\n"
                "NKEY Seed printed below can be used to sign and prove identity.\n\n"
                "-----BEGIN USER NKEY SEED-----\n%s\n------END USER NKEY SEED------\n" % (user_jwt, user_seed))
    os.chmod(path, 0o600)
    return user_seed


def make_user_nkey():
    """(public key "U...", seed "SU...") of a new NKey user, as `nk -gen user`
    makes them: base32 of prefix, ed25519 key, CRC-16 (nats-io/nkeys)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    seed = os.urandom(32)
    public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    prefix_seed, prefix_user = 18 << 3, 20 << 3
    return (nkey_encode([prefix_user], public),
            nkey_encode([prefix_seed | (prefix_user >> 5), (prefix_user & 31) << 3], seed))


class NatsConf(Nats):
    """wisp_cluster's nats-server, from a configuration file with TLS and
    authorization blocks."""

    def __init__(self, workdir, tls=None, auth=None, host="127.0.0.1", extra=()):
        super().__init__()
        shutil.rmtree(self.dir, True)
        self.dir = tempfile.mkdtemp(prefix="wisp-nats-", dir=workdir)
        self.host = host
        lines = ["listen: %s:%d" % (host, self.port), "http: 127.0.0.1:%d" % self.mport,
                 "jetstream { store_dir: %s }" % json.dumps(os.path.join(self.dir, "js"))]
        if tls:
            lines += ["tls {"] + ["  %s: %s" % (k, json.dumps(v)) for k, v in tls.items()] + ["}"]
        if auth:
            lines += ["authorization {"] + ["  " + a for a in auth] + ["}"]
        lines += list(extra)
        self.conf = os.path.join(self.dir, "nats.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def command(self):
        return [NATS_BIN, "-c", self.conf]

    def connections(self):
        """Connection name -> its /connz entry."""
        with urllib.request.urlopen("http://127.0.0.1:%d/connz" % self.mport, timeout=IO_TIMEOUT) as r:
            return {c.get("name"): c for c in json.load(r).get("connections", [])}


class ClusterNatsAuthTest(ClusterCase):
    # Each test starts nats-server with the TLS and authorization it wants
    # (serve_nats) and its nodes (launch, join).
    start_nats_in_setup = False
    wait = WAIT

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="wisp-e2e30-")
        certs = os.path.join(REPO, "certs", "make-certs.sh")
        for args in ([], ["client", "node"], ["--dir", os.path.join(cls.work, "other"), "ca"]):
            if "--dir" not in args:
                args = ["--dir", cls.work] + args
            r = subprocess.run(["sh", certs] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               timeout=60)
            if r.returncode != 0:
                raise AssertionError("make-certs.sh %s failed:\n%s" % (" ".join(args), r.stdout))
        cls.ca = os.path.join(cls.work, "ca.crt")
        cls.other_ca = os.path.join(cls.work, "other", "ca.crt")
        cls.server_tls = {"cert_file": os.path.join(cls.work, "server.crt"),
                          "key_file": os.path.join(cls.work, "server.key")}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, True)

    def serve_nats(self, tls=None, auth=None, host="127.0.0.1", extra=()):
        # Not ClusterCase.start_nats: that would remove nats-server's log
        # before a failed test's cleanup shows it (the class removes it).
        self.nats = NatsConf(self.work, tls, auth, host, extra)
        self.addCleanup(self.nats.kill)
        self.nats.start()
        return self.nats

    def launch(self, name, scheme="tls", **cluster):
        """Starts node name without waiting for NATS (it may refuse it)."""
        # With persistence (the default): a refused node runs alone as while
        # NATS is down, and acknowledges QoS 1 through its forwarding queue
        # (without it the ack would wait for JetStream, e2e 32).
        n = Node(name, self.nats.port, persistence=True)
        n.extra_config["cluster"]["nats"] = ["%s://%s:%d" % (scheme, self.nats.host, self.nats.port)]
        n.extra_config["cluster"]["interest_interval"] = 1
        n.extra_config["cluster"].update(cluster)
        self.nodes[name] = n
        n.start()
        return n

    def join(self, name, **cluster):
        n = self.launch(name, **cluster)
        self.assertIsNotNone(n.wait_log("connected to NATS as node '%s'" % name, timeout=WAIT),
                             "node %s never connected to NATS" % name)
        # Settled (its JetStream set-up and first beats over) before the test
        # may stop it: libnats 3.4 shares one OpenSSL object between its
        # reader and writer threads (nats.c PR 913 fixed that later), so a
        # TLS connection can drop in the start-up burst and reconnect, and a
        # node stopped in the middle of that reconnect can outlast
        # Broker.stop's bound.
        self.assertIsNotNone(n.wait_log(SELECTIVE, timeout=WAIT), "node %s never heard the cluster" % name)
        self.assertIsNotNone(n.wait_log("JetStream ready", timeout=WAIT), "node %s: JetStream never ready" % name)
        # Its data connection (QoS 0 across nodes) authenticates and
        # verifies as the others do.
        self.assertIsNotNone(n.wait_log("NATS data connection up", timeout=WAIT),
                             "node %s: its data connection never came up" % name)
        return n

    def assert_crosses(self, src="a", dst="b"):
        """A QoS 1 message from src's client reaches dst's subscriber, once
        every node learnt the others' interest."""
        for name in (src, dst):
            self.assertIsNotNone(self.nodes[name].wait_log(SELECTIVE, timeout=WAIT),
                                 "node %s never heard the other node" % name)
        sub = self.client(dst, "sub-" + dst)
        self.assertEqual(sub.subscribe([("x/+", 1)]), [1])
        pub = self.client(src, "pub-" + src)
        pub.publish("x/1", b"across", qos=1, pid=1)  # PUBACK: JetStream stored it
        p = sub.recv_publish(timeout=WAIT)
        self.assertEqual((p.topic, p.payload, p.qos), ("x/1", b"across", 1))
        # QoS 0 crosses on src's data connection ("<node>-pub").
        before = self.nats.in_msgs(src + "-pub")
        pub.publish("x/2", b"at most once", qos=0)
        p = sub.recv_publish(timeout=WAIT)
        self.assertEqual((p.topic, p.payload, p.qos), ("x/2", b"at most once", 0))
        self.assertEqual(self.nats.in_msgs(src + "-pub"), before + 1)

    def assert_refused_and_serving(self, name, reason):
        """The node says NATS refused it and why, and its local clients get
        a QoS 1 round trip."""
        line = self.nodes[name].wait_log("refused node '%s'" % name, timeout=WAIT)
        self.assertIsNotNone(line, "node %s did not say NATS refused it" % name)
        self.assertIn(reason, line)
        self.assertIn("serving local clients only", line)
        sub = self.client(name, "local-sub")
        self.assertEqual(sub.subscribe([("local/t", 1)]), [1])
        self.client(name, "local-pub").publish("local/t", b"here", qos=1, pid=1)
        self.assertEqual(sub.recv_publish(timeout=WAIT).payload, b"here")
        status, body = self.nodes[name].get("/readyz")
        self.assertEqual(status, 503)
        self.assertIn("not connected to NATS", body)

    def assert_no_secret_logged(self, *secrets):
        for n in self.nodes.values():
            for secret in secrets:
                self.assertNotIn(secret, n.log(), "a secret is in node %s's log" % n)

    def test_tls_and_password_every_connection_is_tls_and_a_message_crosses(self):
        self.serve_nats(tls=self.server_tls, auth=["user: wisp", "password: %s" % json.dumps(PASSWORD)])
        for name in ("a", "b"):
            self.join(name, cafile=self.ca, username="wisp", password=PASSWORD)
        self.assert_crosses()
        conns = self.nats.connections()
        for conn in ("a", "a-share", "a-js", "a-pub", "b", "b-share", "b-js", "b-pub"):
            self.assertIn(conn, conns, "no NATS connection named %s" % conn)
            self.assertTrue(conns[conn].get("tls_version"), "NATS connection %s is not TLS" % conn)
        self.assert_no_secret_logged(PASSWORD)

    def test_wrong_ca_is_refused_with_the_reason_and_local_clients_are_served(self):
        self.serve_nats(tls=self.server_tls, auth=["user: wisp", "password: %s" % json.dumps(PASSWORD)])
        self.launch("a", cafile=self.other_ca, username="wisp", password=PASSWORD)
        self.assert_refused_and_serving("a", "SSL handshake error")

    def test_wrong_password_is_refused_with_the_reason_and_local_clients_are_served(self):
        self.serve_nats(tls=self.server_tls, auth=["user: wisp", "password: %s" % json.dumps(PASSWORD)])
        self.launch("a", cafile=self.ca, username="wisp", password="not-" + PASSWORD)
        self.assert_refused_and_serving("a", "Authorization Violation")
        self.assert_no_secret_logged(PASSWORD, "not-" + PASSWORD)

    def test_tls_url_against_a_server_without_tls_is_refused_not_plain_text(self):
        # cnats alone would fall back to plain text for a tls:// URL.
        self.serve_nats()
        self.launch("a", scheme="tls")
        self.assert_refused_and_serving("a", "Secure Connection not available")

    def test_server_name_is_checked(self):
        self.serve_nats(tls=self.server_tls)
        self.launch("a", cafile=self.ca, tls_server_name="not-this-server.example")
        self.assert_refused_and_serving("a", "hostname mismatch")

    def test_url_host_is_checked_against_the_certificate_by_default(self):
        # 127.0.0.2 is loopback too, but not in the server certificate
        # (localhost, 127.0.0.1, ::1): cnats alone checks no name at all.
        self.serve_nats(tls=self.server_tls, host="127.0.0.2")
        self.launch("a", cafile=self.ca)
        self.assert_refused_and_serving("a", "IP address mismatch")
        # The name it does carry, given, lets the same node in.
        self.join("b", cafile=self.ca, tls_server_name="localhost")

    def test_skip_verify_joins_without_the_ca(self):
        self.serve_nats(tls=self.server_tls)
        self.join("a", tls_skip_verify=True)

    def test_mutual_tls_client_certificate_joins_and_none_is_refused(self):
        tls = dict(self.server_tls, ca_file=self.ca, verify=True)
        self.serve_nats(tls=tls)
        cert = {"certfile": os.path.join(self.work, "node.crt"), "keyfile": os.path.join(self.work, "node.key")}
        for name in ("a", "b"):
            self.join(name, cafile=self.ca, **cert)
        self.assert_crosses("b", "a")
        self.launch("c", cafile=self.ca)
        line = self.nodes["c"].wait_log("refused node 'c'", timeout=WAIT)
        self.assertIsNotNone(line, "a node without a client certificate was not refused")

    def test_token_and_token_in_url_cross_and_are_not_logged(self):
        self.serve_nats(auth=["token: %s" % json.dumps(TOKEN)])
        self.join("a", scheme="nats", token=TOKEN)
        b = Node("b", self.nats.port)
        b.extra_config["cluster"]["nats"] = ["nats://%s@127.0.0.1:%d" % (TOKEN, self.nats.port)]
        b.extra_config["cluster"]["interest_interval"] = 1
        self.nodes["b"] = b
        b.start()
        self.assertIsNotNone(b.wait_log("connected to NATS as node 'b'", timeout=WAIT))
        self.assertIsNotNone(b.wait_log(r"over NATS nats://\*\*\*@127\.0\.0\.1:%d" % self.nats.port, timeout=WAIT))
        self.assert_crosses()
        self.assert_no_secret_logged(TOKEN)

    def test_nkey_user_joins(self):
        public, seed = make_user_nkey()
        seed_file = os.path.join(self.work, "user.nk")
        with open(seed_file, "w") as f:
            f.write(seed + "\n")
        os.chmod(seed_file, 0o600)
        self.serve_nats(tls=self.server_tls, auth=["users: [ { nkey: %s } ]" % public])
        for name in ("a", "b"):
            self.join(name, cafile=self.ca, nkey=public, nkey_seed=seed_file)
        self.assert_crosses()
        self.assert_no_secret_logged(seed)

    def test_creds_file_of_an_operator_mode_account_joins_and_another_account_is_refused(self):
        lines, acc_key, acc_pub = make_operator()
        self.serve_nats(tls=self.server_tls, extra=lines)
        seeds = []
        for name in ("a", "b"):
            creds = os.path.join(self.work, "%s.creds" % name)
            seeds.append(write_creds(creds, acc_key, acc_pub))
            self.join(name, cafile=self.ca, credentials=creds)
        self.assert_crosses()
        self.assert_no_secret_logged(*seeds)
        # A user of an account the server does not know.
        other_key, other_pub, _ = nkey_pair(0)
        stranger = os.path.join(self.work, "stranger.creds")
        write_creds(stranger, other_key, other_pub)
        self.launch("c", cafile=self.ca, credentials=stranger)
        self.assert_refused_and_serving("c", "Authorization Violation")

    def test_nkey_against_a_server_without_nkeys_is_refused(self):
        # No nonce comes to sign (libnats still asks for a signature).
        public, seed = make_user_nkey()
        seed_file = os.path.join(self.work, "nononce.nk")
        with open(seed_file, "w") as f:
            f.write(seed + "\n")
        self.serve_nats(tls=self.server_tls, auth=["user: wisp", "password: %s" % json.dumps(PASSWORD)])
        self.launch("a", cafile=self.ca, nkey=public, nkey_seed=seed_file)
        self.assert_refused_and_serving("a", "sent no nonce to sign")

    def test_missing_credentials_file_is_refused_at_start_with_its_key_path(self):
        path = os.path.join(self.work, "bad.json")
        with open(path, "w") as f:
            json.dump({"cluster": {"nats": "tls://127.0.0.1:4222", "node": "a",
                                   "credentials": os.path.join(self.work, "missing.creds")}}, f)
        r = run_wisp(["--check-config", path])
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("cluster.credentials: file not found: %s" % os.path.join(self.work, "missing.creds"), r.stdout)
        with open(path, "w") as f:
            json.dump({"cluster": {"nats": "tls://127.0.0.1:4222", "token": "t", "username": "u",
                                   "password": "p"}}, f)
        r = run_wisp(["--check-config", path])
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("cluster.token: cannot be combined with cluster.username", r.stdout)
        # What only libnats or the seed's key can tell, --check-config tells too.
        garbage = os.path.join(self.work, "garbage.pem")
        with open(garbage, "w") as f:
            f.write("not a certificate\n")
        public, seed = make_user_nkey()
        other, _ = make_user_nkey()
        seed_file = os.path.join(self.work, "check.nk")
        with open(seed_file, "w") as f:
            f.write(seed + "\n")
        for cluster, want in (({"cafile": garbage}, "cluster.cafile: %s: " % garbage),
                              ({"nkey": other, "nkey_seed": seed_file},
                               "cluster.nkey_seed: %s: its public key is not cluster.nkey" % seed_file)):
            with open(path, "w") as f:
                json.dump({"cluster": dict({"nats": "tls://127.0.0.1:4222"}, **cluster)}, f)
            r = run_wisp(["--check-config", path])
            self.assertEqual(r.returncode, 1, r.stdout)
            self.assertIn("%s: %s" % (path, want), r.stdout)
        with open(path, "w") as f:
            json.dump({"cluster": {"nats": "tls://127.0.0.1:4222", "nkey": public, "nkey_seed": seed_file}}, f)
        r = run_wisp(["--check-config", path])
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertNotIn(seed, r.stdout)


if __name__ == "__main__":
    main()
