"""TLS options of wisp_pub, wisp_sub and wisp_sensor, compared with
mosquitto_pub/mosquitto_sub against a mutual-TLS broker: --cafile, --cert,
--key, --insecure, a wrong CA. Certificates are made per run with
certs/make-certs.sh. The broker is Debian's mosquitto or wisp (BROKER)."""
import json
import os
import shutil
import subprocess
import tempfile
import time
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


class TlsBroker:
    """A mutual-TLS broker on a free loopback port, with server certificate `cert`."""

    def __init__(self, certs, cert="server"):
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
        self.log = open(os.path.join(self.dir, "broker.log"), "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir)
        clitest.wait_port(self.port, self.proc)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


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

    def test_pub_and_sub_over_mutual_tls_match_mosquitto(self):
        for name, prog in clitest.tools("sub").items():
            topic = "tls/%s/%d" % (name, os.getpid())
            sub = subprocess.Popen([prog, "-h", "localhost", "-p", self.port, "-t", topic, "-v", "-C", "2",
                                    "-W", "20"] + self.tls_args(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            time.sleep(0.5)
            for pname, pprog in clitest.tools("pub").items():
                rc, _, err = clitest.run(pprog, ["-h", "localhost", "-p", self.port, "-t", topic, "-m",
                                                 "from-" + pname, "-q", "1"] + self.tls_args("sensor-0001"))
                self.assertEqual(rc, 0, "%s over TLS: %s" % (pname, err))
            out, err = sub.communicate(timeout=30)
            self.assertEqual(sub.returncode, 0, err)
            self.assertEqual(out.decode().splitlines(),
                             ["%s from-wisp" % topic, "%s from-mosquitto" % topic], name)

    def test_wrong_ca_fails_alike(self):
        """An untrusted server is refused. mosquitto_pub itself exits 1
        ("Unable to connect") or 8 ("A TLS error occurred") depending on
        whether the handshake fails inside its connect call, which is a
        matter of timing; both tools must fail with one of those."""
        other_ca = os.path.join(self.other, "ca.crt")
        res = self.both("pub", ["-h", "localhost", "-p", self.port, "-t", "x", "-m", "y"] +
                        self.tls_args(ca=other_ca))
        for tool, (rc, _out, err) in res.items():
            self.assertIn(rc, (1, 8), (tool, res))
            self.assertIn(b"TLS error", err, (tool, res))

    def test_missing_client_certificate_refused(self):
        res = self.both("pub", ["-h", "localhost", "-p", self.port, "-t", "x", "-m", "y", "--cafile",
                                os.path.join(self.certs, "ca.crt")])
        self.assertNotEqual(res["mosquitto"][0], 0)
        self.assertNotEqual(res["wisp"][0], 0, res)

    def test_insecure_skips_only_the_host_name_check(self):
        """A broker whose (CA-signed) certificate names another host is
        refused, unless --insecure; a wrong CA stays refused even then."""
        make_misnamed_server_cert(self.certs)
        other = TlsBroker(self.certs, cert="other")
        try:
            base = ["-h", "localhost", "-p", str(other.port), "-t", "x", "-m", "y"] + self.tls_args()
            strict = self.both("pub", base)
            for tool, (rc, _out, _err) in strict.items():
                self.assertIn(rc, (1, 8), (tool, strict))
            loose = self.both("pub", base + ["--insecure"])
            self.assertEqual(loose["mosquitto"][0], 0, loose["mosquitto"])
            self.assertEqual(loose["wisp"][0], 0, loose["wisp"])
            wrong_ca = self.both("pub", ["-h", "localhost", "-p", str(other.port), "-t", "x", "-m", "y",
                                         "--insecure"] + self.tls_args(ca=os.path.join(self.other, "ca.crt")))
            for tool, (rc, _out, _err) in wrong_ca.items():
                self.assertNotEqual(rc, 0, (tool, wrong_ca))
        finally:
            other.stop()

    def test_sensor_fleet_with_per_device_certificates(self):
        """Issue #4's done-when: a subscriber with the CA receives what a
        mutual-TLS wisp_sensor fleet publishes."""
        site = "tls%d" % os.getpid()
        sub = subprocess.Popen(["mosquitto_sub", "-h", "localhost", "-p", self.port, "-t", "sensors/%s/+" % site,
                                "-v", "-C", "6", "-W", "40"] + self.tls_args(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)
        rc, out, err = clitest.run(SENSOR, ["-h", "localhost", "-p", self.port, "-n", "3", "-c", "2", "-i", "0.2",
                                            "--site", site, "--cafile", os.path.join(self.certs, "ca.crt"),
                                            "--certs-dir", self.certs, "--json"], timeout=60)
        self.assertEqual(rc, 0, err)
        sout, serr = sub.communicate(timeout=50)
        self.assertEqual(sub.returncode, 0, serr)
        devices = sorted(json.loads(line.split(" ", 1)[1])["device"] for line in sout.decode().splitlines())
        self.assertEqual(devices, ["sensor-0001"] * 2 + ["sensor-0002"] * 2 + ["sensor-0003"] * 2)


if __name__ == "__main__":
    unittest.main()
