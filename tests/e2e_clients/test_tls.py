"""TLS options of wisp_pub, wisp_sub and wisp_sensor, compared with
mosquitto_pub/mosquitto_sub against a mutual-TLS broker: --cafile, --cert,
--key, --insecure, a wrong CA. Certificates are made per run with
certs/make-certs.sh. The broker is Debian's mosquitto or wisp (BROKER)."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import clitest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_CERTS = os.path.join(ROOT, "certs", "make-certs.sh")
SENSOR = os.environ.get("WISP_SENSOR", "wisp_sensor")


def make_certs(d, *args):
    subprocess.run([MAKE_CERTS, "--dir", d] + list(args), check=True, capture_output=True, timeout=60)


def make_misnamed_server_cert(d):
    """other.crt/.key: signed by the test CA, but for other.example only."""
    def ossl(*a):
        subprocess.run(["openssl"] + list(a), check=True, capture_output=True, timeout=60)
    key, csr, crt, ext = (os.path.join(d, n) for n in ("other.key", "other.csr", "other.crt", "other.ext"))
    with open(ext, "w") as f:
        f.write("subjectAltName = DNS:other.example\n")
    ossl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    ossl("req", "-new", "-key", key, "-subj", "/CN=other.example", "-out", csr)
    ossl("x509", "-req", "-in", csr, "-CA", os.path.join(d, "ca.crt"), "-CAkey", os.path.join(d, "ca.key"),
         "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", crt)


class TlsBroker(clitest.BrokerProcess):
    """A mutual-TLS broker on a free loopback port, with server certificate
    `cert`; stop() checks its exit status and log (clitest.BrokerProcess)."""

    def __init__(self, certs, cert="server"):
        self.kind = clitest.BROKER
        self.dir = tempfile.mkdtemp(prefix="wisp-e2e-tls-")
        self.port = clitest.free_port()
        crt, key, ca = (os.path.join(certs, cert + ".crt"), os.path.join(certs, cert + ".key"),
                        os.path.join(certs, "ca.crt"))
        if clitest.BROKER == "wisp":
            conf = os.path.join(self.dir, "wisp.json")
            with open(conf, "w") as f:
                json.dump({"listeners": [{"bind": "127.0.0.1", "port": self.port, "protocol": "mqtts",
                                          "tls": {"cert": crt, "key": key, "ca": ca, "require_certificate": True}}],
                           "persistence": {"enabled": False}}, f)
            cmd = [os.environ["WISP_BROKER"], "-c", conf]
        else:
            conf = os.path.join(self.dir, "mosquitto.conf")
            with open(conf, "w") as f:
                f.write("listener %d 127.0.0.1\nallow_anonymous true\nrequire_certificate true\n"
                        "certfile %s\nkeyfile %s\ncafile %s\n" % (self.port, crt, key, ca))
                if os.geteuid() == 0:
                    f.write("user root\n")  # keep reading the 0600 keys of the temp dir
            cmd = ["mosquitto", "-c", conf]
        self.spawn(cmd)


# How a failed TLS connection ends, as (exit status, stderr with the
# program name as TOOL). mosquitto_pub's status depends on timing: when the
# handshake fails inside its blocking connect call it says "Unable to
# connect", when it fails later in its network loop "Error: ..."; both were
# seen for the same command line and broker (10 runs: 6 and 4; 12 more: 9
# and 3). wisp_pub connects without blocking and reports a refused server
# certificate as the first, the more frequent; any other failed handshake
# (an alert, a peer that is not TLS) as the second, as mosquitto's loop
# does. Every outcome a test accepts is listed here, exactly.
TLS_FAILED_IN_CONNECT = (1, "Unable to connect (A TLS error occurred.).\n")
TLS_FAILED_IN_LOOP = (8, "Error: A TLS error occurred.\n")
# A missing client certificate against Debian's mosquitto (OpenSSL, TLS 1.3):
# the client's handshake is complete when the broker's alert arrives, and
# mosquitto_pub reports it as a lost connection or a protocol error (timing
# again); wisp_pub reports the alert as the TLS error it is. Expected
# difference, kept on purpose: wisp_pub's status says what happened.
# Against wisp (mbedTLS, TLS 1.2) the alert comes during the handshake, and
# each tool ends as for any failed handshake (above).
ALERT_AFTER_HANDSHAKE = {(7, "Error: The connection was lost.\n"), (1, "Error: Protocol error\n")}


class Tls(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = tempfile.mkdtemp(prefix="wisp-e2e-certs-")
        make_certs(cls.certs)
        for name in ("sensor-0001", "sensor-0002", "sensor-0003", "dash"):
            make_certs(cls.certs, "client", name)
        # A second CA, to be the wrong one.
        cls.other = tempfile.mkdtemp(prefix="wisp-e2e-other-ca-")
        make_certs(cls.other)
        cls.broker = TlsBroker(cls.certs)
        cls.port = str(cls.broker.port)

    @classmethod
    def tearDownClass(cls):
        cls.broker.stop()
        shutil.rmtree(cls.certs, ignore_errors=True)
        shutil.rmtree(cls.other, ignore_errors=True)

    def tls_args(self, client="dash", ca=None):
        return ["--cafile", ca or os.path.join(self.certs, "ca.crt"),
                "--cert", os.path.join(self.certs, client + ".crt"),
                "--key", os.path.join(self.certs, client + ".key")]

    def both(self, kind, args):
        """Runs both tools; returns {tool: (rc, stdout, stderr)}."""
        out = {}
        for name, prog in clitest.tools(kind).items():
            out[name] = clitest.run(prog, args)
        return out

    def assert_outcomes(self, res, wisp, mosquitto):
        """Each tool's (exit status, stderr) is exactly one of those listed
        for it, and neither printed anything on stdout."""
        for tool, allowed in (("wisp", wisp), ("mosquitto", mosquitto)):
            rc, out, err = res[tool]
            prog = clitest.tools("pub")[tool]
            got = (rc, clitest.normalise(err.decode("utf-8", "replace"), prog))
            self.assertIn(got, set(allowed), (tool, res))
            self.assertEqual(out, b"", (tool, res))

    def test_pub_and_sub_over_mutual_tls_match_mosquitto(self):
        for name, prog in clitest.tools("sub").items():
            topic = "tls/%s/%d" % (name, os.getpid())
            # A retained sentinel printed: subscribed before the publishes.
            mark = "sentinel-%s-%d" % (name, os.getpid())
            rc, _, err = clitest.run("mosquitto_pub", ["-h", "localhost", "-p", self.port, "-t", topic, "-m", mark,
                                                       "-r", "-q", "1"] + self.tls_args())
            self.assertEqual(rc, 0, err)
            sub = clitest.BgTool([prog, "-h", "localhost", "-p", self.port, "-t", topic, "-v", "-C", "3",
                                  "-W", "20"] + self.tls_args())
            self.addCleanup(sub.kill)
            sub.wait_for(mark.encode())
            for pname, pprog in clitest.tools("pub").items():
                rc, _, err = clitest.run(pprog, ["-h", "localhost", "-p", self.port, "-t", topic, "-m",
                                                 "from-" + pname, "-q", "1"] + self.tls_args("sensor-0001"))
                self.assertEqual(rc, 0, "%s over TLS: %s" % (pname, err))
            rc, out, err = sub.finish(timeout=30)
            self.assertEqual(rc, 0, sub.describe())
            self.assertEqual(out.decode().splitlines(),
                             ["%s %s" % (topic, mark), "%s from-wisp" % topic, "%s from-mosquitto" % topic], name)
            rc, _, err = clitest.run("mosquitto_pub", ["-h", "localhost", "-p", self.port, "-t", topic, "-r", "-n"]
                                     + self.tls_args())
            self.assertEqual(rc, 0, err)

    def test_wrong_ca_fails_alike(self):
        """An untrusted server is refused by both tools with a TLS error
        (the exact outcomes: TLS_FAILED_IN_CONNECT/_IN_LOOP above)."""
        other_ca = os.path.join(self.other, "ca.crt")
        res = self.both("pub", ["-h", "localhost", "-p", self.port, "-t", "x", "-m", "y"] +
                        self.tls_args(ca=other_ca))
        self.assert_outcomes(res, wisp={TLS_FAILED_IN_CONNECT},
                             mosquitto={TLS_FAILED_IN_CONNECT, TLS_FAILED_IN_LOOP})

    def test_missing_client_certificate_refused(self):
        res = self.both("pub", ["-h", "localhost", "-p", self.port, "-t", "x", "-m", "y", "--cafile",
                                os.path.join(self.certs, "ca.crt")])
        if clitest.BROKER == "wisp":
            self.assert_outcomes(res, wisp={TLS_FAILED_IN_LOOP},
                                 mosquitto={TLS_FAILED_IN_CONNECT, TLS_FAILED_IN_LOOP})
        else:
            self.assert_outcomes(res, wisp={TLS_FAILED_IN_LOOP}, mosquitto=ALERT_AFTER_HANDSHAKE)

    def test_insecure_skips_only_the_host_name_check(self):
        """A broker whose (CA-signed) certificate names another host is
        refused, unless --insecure; a wrong CA stays refused even then."""
        make_misnamed_server_cert(self.certs)
        other = TlsBroker(self.certs, cert="other")
        try:
            base = ["-h", "localhost", "-p", str(other.port), "-t", "x", "-m", "y"] + self.tls_args()
            failed = dict(wisp={TLS_FAILED_IN_CONNECT}, mosquitto={TLS_FAILED_IN_CONNECT, TLS_FAILED_IN_LOOP})
            self.assert_outcomes(self.both("pub", base), **failed)
            loose = self.both("pub", base + ["--insecure"])
            self.assertEqual(loose["mosquitto"], (0, b"", b""))
            self.assertEqual(loose["wisp"], (0, b"", b""))
            wrong_ca = self.both("pub", ["-h", "localhost", "-p", str(other.port), "-t", "x", "-m", "y",
                                         "--insecure"] + self.tls_args(ca=os.path.join(self.other, "ca.crt")))
            self.assert_outcomes(wrong_ca, **failed)
        finally:
            other.stop()

    def test_ciphers_and_unusable_keys(self):
        """--ciphers takes OpenSSL's TLS 1.2 suite names (translated to mbed
        TLS's) as well as IANA's; a list nobody knows and a key that does
        not match its certificate fail at connect as in mosquitto; a
        missing file is "File not found"."""
        base = ["-h", "localhost", "-p", self.port, "-t", "x", "-m", "y"] + self.tls_args()
        for ciphers in ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256",
                        "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES256-GCM-SHA384:"
                        "ECDHE-RSA-AES256-GCM-SHA384", "DEFAULT", "HIGH"):
            with self.subTest(ciphers=ciphers):
                res = self.both("pub", base + ["--ciphers", ciphers])
                self.assertEqual(res["wisp"], (0, b"", b""), ciphers)
                self.assertEqual(res["mosquitto"], (0, b"", b""), ciphers)
        bogus = self.both("pub", base + ["--ciphers", "NO-SUCH-SUITE"])
        self.assert_outcomes(bogus, wisp={TLS_FAILED_IN_CONNECT}, mosquitto={TLS_FAILED_IN_CONNECT})
        mismatch = self.both("pub", ["-h", "localhost", "-p", self.port, "-t", "x", "-m", "y", "--cafile",
                                     os.path.join(self.certs, "ca.crt"), "--cert", os.path.join(self.certs, "dash.crt"),
                                     "--key", os.path.join(self.certs, "sensor-0001.key")])
        self.assert_outcomes(mismatch, wisp={TLS_FAILED_IN_CONNECT}, mosquitto={TLS_FAILED_IN_CONNECT})
        missing = self.both("pub", base + ["--cafile", "/nonexistent/ca.crt"])
        self.assert_outcomes(missing, wisp={(1, "Error: Problem setting TLS options: File not found.\n")},
                             mosquitto={(1, "Error: Problem setting TLS options: File not found.\n")})
        # OpenSSL's cipher-list language beyond DEFAULT/HIGH: refused, saying why.
        rc, out, err = clitest.run(clitest.WISP_PUB, base + ["--ciphers", "HIGH:!aNULL"])
        self.assertEqual(rc, 1)
        self.assertIn(b'"HIGH" is an OpenSSL cipher-list keyword', err)

    def test_sensor_fleet_with_per_device_certificates(self):
        """Issue #4's done-when: a subscriber with the CA receives what a
        mutual-TLS wisp_sensor fleet publishes."""
        site = "tls%d" % os.getpid()
        sub = clitest.MosqSub(self.port, ["sensors/%s/+" % site], "%t %p",
                              ["-h", "localhost", "-C", "6", "-W", "40"] + self.tls_args())
        self.addCleanup(sub.kill)
        sub.wait_subscribed([0])
        rc, out, err = clitest.run(SENSOR, ["-h", "localhost", "-p", self.port, "-n", "3", "-c", "2", "-i", "0.2",
                                            "--site", site, "--cafile", os.path.join(self.certs, "ca.crt"),
                                            "--certs-dir", self.certs, "--json"], timeout=60)
        self.assertEqual(rc, 0, err)
        src, sout, serr = sub.finish(timeout=50)
        self.assertEqual(src, 0, sub.describe())
        devices = sorted(json.loads(line.split(" ", 1)[1])["device"] for line in sub.messages(sout))
        self.assertEqual(devices, ["sensor-0001"] * 2 + ["sensor-0002"] * 2 + ["sensor-0003"] * 2)


if __name__ == "__main__":
    unittest.main()
