#!/usr/bin/python3
# ctest: TIMEOUT 300 RUN_SERIAL ON
"""27 bridge: Wisp bridged to a real Debian Mosquitto on loopback (issue 17).

Both directions at QoS 0, 1 and 2; the remote stopped for 10 s under QoS 1
load and started again (every message Wisp acknowledged arrives, in
order); Wisp killed with kill -9 while the uplink is down (the queue
survives in the store and drains after the restart); a configuration that
would echo forever (the same topic in and out) does not; the bridge's
state in $SYS.

mosquitto must be installed (/usr/sbin/mosquitto): a missing one fails the
test, never skips it."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (IO_TIMEOUT, PUBLISH, Broker, Closed, RawClient,  # noqa: E402
                      free_port, main)

MOSQUITTO = os.environ.get("MOSQUITTO_BIN", "/usr/sbin/mosquitto")
WAIT = 15.0  # seconds a bridge event (connect, drain) may take


class Remote:
    """A Mosquitto on a loopback port, with persistence, so a subscriber's
    queued messages outlive a stop and start (SIGTERM: Mosquitto saves)."""

    def __init__(self):
        if not os.path.exists(MOSQUITTO):
            raise AssertionError("mosquitto not installed at %s" % MOSQUITTO)
        self.dir = tempfile.mkdtemp(prefix="wisp-bridge-remote-")
        self.port = free_port()
        self.proc = None
        self.log_path = os.path.join(self.dir, "mosquitto.log")

    def start(self):
        conf = os.path.join(self.dir, "mosquitto.conf")
        lines = ["listener %d 127.0.0.1" % self.port, "allow_anonymous true",
                 "persistence true", "persistence_location %s/" % self.dir,
                 "log_dest stderr", "log_type all", "max_queued_messages 100000"]
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


def bridge_config(remote, topics, version="mqttv311", **extra):
    br = {"name": "up", "addresses": ["127.0.0.1:%d" % remote.port], "protocol_version": version,
          "client_id": "gateway-1", "keepalive": 10, "reconnect_min": 1, "reconnect_max": 2,
          "topics": topics}
    br.update(extra)
    return {"bridges": [br]}


class BridgeTest(unittest.TestCase):
    def setUp(self):
        self.remote = Remote()
        self.addCleanup(self.remote.cleanup)
        self.remote.start()
        self.wisp = None

    def start_wisp(self, cfg, limits=None):
        self.wisp = Broker(config=cfg, limits=limits)
        self.addCleanup(self.wisp.cleanup)
        self.wisp.start()
        self.wait_connected()
        return self.wisp

    def wait_connected(self, offset=0):
        self.wisp.wait_log(r"bridge up: connected to", offset=offset, timeout=WAIT)

    def remote_client(self, client_id, filters, clean=True):
        c = RawClient(self.remote.port)
        self.addCleanup(c.close)
        self.assertEqual(c.connect(client_id, clean=clean), 0)
        c.subscribe(filters)
        return c

    def local_client(self, client_id, filters=None):
        c = RawClient(self.wisp.port)
        self.addCleanup(c.close)
        self.assertEqual(c.connect(client_id), 0)
        if filters:
            c.subscribe(filters)
        return c

    def wait_remote_subscribed(self, topic):
        """A probe the bridge must carry in: published on the remote until
        it arrives locally (the bridge's SUBSCRIBE has reached it)."""

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
                    deadline = time.monotonic() + WAIT
                    while True:
                        rpub.publish("cmd/probe", b"p", qos=0)
                        try:
                            got = near.recv_publish(timeout=0.5)
                            break
                        except AssertionError:
                            if time.monotonic() > deadline:
                                raise
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


if __name__ == "__main__":
    main()
