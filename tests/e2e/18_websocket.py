#!/usr/bin/python3
# ctest: TIMEOUT 300
"""18 websocket: MQTT over WebSockets (ws and wss listeners, RFC 6455).

Each broker has three listeners: ws (the one the harness waits for), a
plain mqtt one, and wss with a certificate from certs/make-certs.sh (made
for this run in a temp dir), so every client meets every other.

Covers:
- real clients: MQTT.js 5.16 on Node (tests/js) over ws:// and wss:// with
  the test CA, QoS 0, 1 and 2, MQTT 3.1.1 (and 5 over ws); Python paho-mqtt with
  transport="websockets" over ws and wss; Eclipse Paho C (Debian's
  libpaho-mqtt, tests/support/paho_ws_client.c) over ws:// and wss://;
  messages cross between WebSocket and plain TCP clients;
- HTTP refusals: a malformed request (400), an oversized head (431), a
  request that is not an upgrade (426): each gets its status, is closed,
  counted in $SYS and logged once, while an honest client's QoS 1 round
  trip completes;
- frames that break RFC 6455 after the upgrade: unmasked (close 1002),
  over max_frame_size (1009), a fragmented ping (1002): each closes only
  that connection with the status, logged once;
- a close frame in the middle of an MQTT packet: the close is echoed
  (1000), the connection ends abnormally (its will is published);
- ping/pong, and a PUBLISH split across frames / many packets in a frame;
- in a browser: MQTT.js's browser bundle in Debian's Chromium (headless,
  playwright-core, tests/js/browser_mqtt.js) over ws:// and wss://, MQTT
  3.1.1 and 5. For
  wss Chromium is told to accept the test server's key by its SPKI hash
  (--ignore-certificate-errors-spki-list), since the test cannot add the
  test CA to Chromium's store without NSS's certutil; not
  --ignore-certificate-errors;
- plaintext on the wss port fails as a TLS handshake, counted as one;
- X-Forwarded-For names the client only on a trust_proxy listener;
- a WebSocket subscriber that stops reading is bounded exactly as a TCP one
  (limits.max_output_buffer, then output_buffer_timeout): both are
  disconnected for it while the broker's RSS stays bounded.
"""

import json
import os
import queue
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (IO_TIMEOUT, REPO_ROOT, Broker, BrokerTestCase, Closed, RawClient,  # noqa: E402
                      client_tls_context, connect_pkt, free_port, main, make_certs, mosquitto_pub,
                      paho_get, paho_stop, paho_subscribe, publish_pkt, skip_unless_wisp)

CERTS = None
NODE = os.environ.get("WISP_NODE") or shutil.which("node") or "/usr/bin/node"
MQTT_JS = os.path.join(REPO_ROOT, "tests", "js", "node_modules", "mqtt")
PAHO_WS = os.environ.get("WISP_PAHO_WS")
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
MASK = b"\x11\x22\x33\x44"


SPKI = None
CHROMIUM = "/usr/bin/chromium"
BROWSER_JS = os.path.join(REPO_ROOT, "tests", "js", "browser_mqtt.js")


def setUpModule():
    global CERTS, SPKI
    CERTS = make_certs(tempfile.mkdtemp(prefix="wisp-e2e-ws-certs-"))
    # The server key's SPKI hash, for Chromium (see browser_mqtt.js).
    pub = subprocess.run(["openssl", "x509", "-in", os.path.join(CERTS, "server.crt"), "-pubkey", "-noout"],
                         capture_output=True, timeout=30, check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub,
                         capture_output=True, timeout=30, check=True).stdout
    import base64
    import hashlib
    SPKI = base64.b64encode(hashlib.sha256(der).digest()).decode()


def tearDownModule():
    if CERTS:
        shutil.rmtree(CERTS, ignore_errors=True)


def ca_file():
    return os.path.join(CERTS, "ca.crt")


def ws_frame(op, payload, fin=True, mask=True, rsv=0):
    """A client frame (masked unless told otherwise)."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | op])
    m = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head += bytes([m | n])
    elif n <= 0xFFFF:
        head += bytes([m | 126]) + struct.pack(">H", n)
    else:
        head += bytes([m | 127]) + struct.pack(">Q", n)
    if not mask:
        return head + payload
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return head + MASK + body


class WsBroker(Broker):
    """A broker whose main listener (self.port) is `ws`, plus a plain mqtt
    listener (self.mqtt_port) and a wss one (self.wss_port). The ws listener
    comes last in the file, so when it accepts, the others are bound."""

    def __init__(self, limits=None, ws_keys=None, **kw):
        super().__init__(limits, listener=dict({"protocol": "ws"}, **(ws_keys or {})), **kw)
        self.mqtt_port = None
        self.wss_port = None

    def config(self):
        cfg = super().config()
        self.mqtt_port = free_port()
        self.wss_port = free_port()
        main_listener = cfg["listeners"][0]
        wss = {"bind": "127.0.0.1", "port": self.wss_port, "protocol": "wss",
               "tls": {"cert": os.path.join(CERTS, "server.crt"),
                       "key": os.path.join(CERTS, "server.key")}}
        for k in ("max_frame_size", "max_header_bytes", "max_headers", "path", "frame_per_packet"):
            if k in main_listener:
                wss[k] = main_listener[k]
        cfg["listeners"] = [{"bind": "127.0.0.1", "port": self.mqtt_port, "protocol": "mqtt"}, wss,
                            main_listener]
        cfg["sys_interval"] = 1
        return cfg


class WsClient(RawClient):
    """RawClient over a WebSocket: MQTT bytes go out in masked binary
    frames, and the payload of the broker's binary frames is the MQTT
    stream read back; control frames are kept in self.controls."""

    def __init__(self, port, tls=None, path="/mqtt", protocol="mqtt", upgrade=True,
                 timeout=IO_TIMEOUT):
        super().__init__(port, timeout=timeout, tls=tls)
        self.raw = b""       # bytes not yet parsed as frames
        self.controls = []   # (opcode, payload) of control frames received
        self.close_code = None
        if upgrade:
            status, head = self.upgrade(path, protocol)
            if status != 101:
                raise AssertionError("upgrade refused: %s" % head)

    def upgrade(self, path="/mqtt", protocol="mqtt", extra=""):
        req = ("GET %s HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, WS_KEY))
        if protocol:
            req += "Sec-WebSocket-Protocol: %s\r\n" % protocol
        self.sock.sendall((req + extra + "\r\n").encode())
        return self.read_head()

    def read_head(self):
        """The HTTP response head: (status, text); leftover bytes are frames."""
        deadline = time.monotonic() + self.timeout
        while b"\r\n\r\n" not in self.raw:
            self._read_raw(deadline)
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        text = head.decode(errors="replace")
        return int(text.split(" ", 2)[1]), text

    def _read_raw(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, OSError) as e:
            if isinstance(e, socket.timeout):
                raise
            chunk = b""
        if not chunk:
            raise Closed("connection closed by broker")
        self.raw += chunk

    def _frame(self):
        """The next complete frame from self.raw, or None."""
        b = self.raw
        if len(b) < 2:
            return None
        if b[1] & 0x80:
            raise AssertionError("the broker masked a frame")
        n, pos = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, pos = struct.unpack(">H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, pos = struct.unpack(">Q", b[2:10])[0], 10
        if len(b) < pos + n:
            return None
        self.raw = b[pos + n:]
        return b[0] & 0x0F, b[pos:pos + n]

    def _fill(self, deadline):
        while True:
            got = False
            while True:
                f = self._frame()
                if f is None:
                    break
                op, payload = f
                if op in (0, 2):
                    self.buf += payload
                    got = got or bool(payload)
                else:
                    self.controls.append((op, payload))
                    if op == 8:
                        self.close_code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else None
                        raise Closed("WebSocket close %s" % self.close_code)
            if got:
                return
            self._read_raw(deadline)

    def send(self, data):
        self.sock.sendall(ws_frame(2, data))

    def send_frame(self, op, payload, **kw):
        self.sock.sendall(ws_frame(op, payload, **kw))

    def wait_ws_close(self, timeout=IO_TIMEOUT):
        """Reads until the broker's close frame and then EOF: the close code."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
        except Closed:
            pass
        code = self.close_code
        # After its close frame the broker closes the TCP connection.
        try:
            while True:
                self._read_raw(deadline)
        except Closed:
            pass
        return code

    def wait_control(self, op, timeout=IO_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            for i, (o, p) in enumerate(self.controls):
                if o == op:
                    del self.controls[i]
                    return p
            f = self._frame()
            if f is None:
                self._read_raw(deadline)
                continue
            if f[0] in (0, 2):
                self.buf += f[1]
            else:
                self.controls.append(f)


def raw_http(port, data, timeout=IO_TIMEOUT):
    """Sends `data` and reads the broker's answer until it closes: (status, text)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = b""
    try:
        s.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            out += chunk
        else:
            raise AssertionError("the broker did not close the connection")
    finally:
        s.close()
    text = out.decode(errors="replace")
    m = re.match(r"HTTP/1\.1 (\d{3}) ", text)
    return (int(m.group(1)) if m else None), text


class WsTestCase(BrokerTestCase):
    LIMITS = None
    WS_KEYS = None

    def setUp(self):
        self._closers = []
        self.broker = WsBroker(self.LIMITS, ws_keys=self.WS_KEYS)
        self.broker.start()

    def ws(self, client_id=None, tls=False, connect=True, **kw):
        port = self.broker.wss_port if tls else self.broker.port
        c = WsClient(port, tls=client_tls_context(ca_file()) if tls else None, **kw)
        self.on_cleanup(c.close)
        if connect:
            self.assertEqual(c.connect(client_id or "ws-%d" % id(c)), 0)
        return c

    def tcp(self, client_id):
        c = RawClient(self.broker.mqtt_port)
        self.on_cleanup(c.close)
        self.assertEqual(c.connect(client_id), 0)
        return c

    def honest_round_trip(self):
        """An honest client's QoS 1 round trip completes (over ws)."""
        n = time.monotonic_ns()
        sub = self.ws("honest-sub-%d" % n)
        self.assertEqual(sub.subscribe([("honest/t", 1)]), [1])
        self.ws("honest-pub-%d" % n).publish("honest/t", b"still here", qos=1, pid=7)
        self.assertEqual(sub.recv_publish().payload, b"still here")

    def wait_sys(self, topic, ok, timeout=10.0):
        """Waits (bounded) for $SYS/broker/<topic> to satisfy ok(value); the value."""
        c = self.tcp("sys-%d" % time.monotonic_ns())
        c.subscribe([("$SYS/broker/" + topic, 0)])
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            try:
                value = int(c.recv_publish(timeout=max(0.1, deadline - time.monotonic())).payload)
            except socket.timeout:
                break
            if ok(value):
                return value
        raise AssertionError("$SYS/broker/%s is %r" % (topic, value))

    def count_log(self, pattern):
        return len(re.findall(pattern, self.broker.log()))


@skip_unless_wisp("wisp's ws listener")
class RealClients(WsTestCase):

    def run_node(self, url, ca=None, version=4):
        script = os.path.join(self.broker.dir, "client.js")
        with open(script, "w") as f:
            f.write(NODE_CLIENT)
        argv = [NODE, script, MQTT_JS, url, str(version)] + ([ca] if ca else [])
        cp = subprocess.run(argv, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        out = cp.stdout.decode(errors="replace")
        self.assertEqual(cp.returncode, 0, "MQTT.js: %s %s" % (out, cp.stderr.decode(errors="replace")))
        self.assertIn("ok qos 0 1 2", out)

    def test_mqttjs_ws_qos012(self):
        """MQTT.js over ws:// (path /mqtt, subprotocol mqtt): QoS 0, 1 and 2
        round trips, MQTT 3.1.1."""
        self.assertTrue(os.path.isdir(MQTT_JS), "npm ci --prefix tests/js first")
        self.run_node("ws://127.0.0.1:%d/mqtt" % self.broker.port)

    def test_mqttjs_ws_mqtt5(self):
        """MQTT.js over ws:// with MQTT 5."""
        self.run_node("ws://127.0.0.1:%d/mqtt" % self.broker.port, version=5)

    def test_mqttjs_wss_qos012(self):
        """MQTT.js over wss:// trusting the test CA (no verification turned off)."""
        self.run_node("wss://localhost:%d/mqtt" % self.broker.wss_port, ca_file())

    def paho_ws(self, tls):
        import paho.mqtt.client as mqtt
        c = mqtt.Client(client_id="paho-ws-%s" % tls, protocol=mqtt.MQTTv311, transport="websockets")
        c.ws_set_options(path="/mqtt")
        if tls:
            c.tls_set(ca_certs=ca_file())
        c.received = queue.Queue()
        c.connack = queue.Queue()
        c.subacks = queue.Queue()
        c.on_connect = lambda cl, ud, flags, rc: cl.connack.put(rc)
        c.on_message = lambda cl, ud, msg: cl.received.put(msg)
        c.on_subscribe = lambda cl, ud, mid, granted: cl.subacks.put((mid, tuple(granted)))
        c.connect("localhost" if tls else "127.0.0.1", self.broker.wss_port if tls else self.broker.port, 30)
        c.loop_start()
        self.on_cleanup(lambda: paho_stop(c))
        self.assertEqual(c.connack.get(timeout=IO_TIMEOUT), 0)
        return c

    def check_paho(self, tls):
        c = self.paho_ws(tls)
        self.assertEqual(paho_subscribe(c, [("paho/#", 2)]), [2])
        for qos in (0, 1, 2):
            info = c.publish("paho/%d" % qos, b"ws %d" % qos, qos=qos)
            info.wait_for_publish(timeout=IO_TIMEOUT)
        got = {}
        for _ in range(3):
            m = paho_get(c)
            got[m.topic] = (m.payload, m.qos)
        self.assertEqual(got, {"paho/%d" % q: (b"ws %d" % q, q) for q in (0, 1, 2)})
        # A plain TCP publisher reaches the WebSocket subscriber, and back.
        mosquitto_pub(self.broker.mqtt_port, "paho/tcp", "from tcp", qos=1)
        m = paho_get(c)
        self.assertEqual((m.topic, m.payload), ("paho/tcp", b"from tcp"))
        tcp = self.tcp("tcp-sub-%s" % tls)
        tcp.subscribe([("back/t", 1)])
        c.publish("back/t", b"from ws", qos=1).wait_for_publish(timeout=IO_TIMEOUT)
        self.assertEqual(tcp.recv_publish().payload, b"from ws")

    def test_paho_python_ws(self):
        """paho-mqtt with transport="websockets": QoS 0, 1, 2, and to and from TCP clients."""
        self.check_paho(False)

    def test_paho_python_wss(self):
        """The same over wss with the test CA."""
        self.check_paho(True)


@skip_unless_wisp("wisp's ws listener")
class PahoC(WsTestCase):
    # Paho C 1.3 reads a frame only up to its first MQTT packet: it needs
    # the listener's frame_per_packet (config/README.md).
    WS_KEYS = {"frame_per_packet": True}

    def test_paho_c_ws_and_wss(self):
        """Eclipse Paho C (libpaho-mqtt3as) with ws:// and wss:// URIs: QoS 0,
        1, 2 published back to back and received, on a frame_per_packet listener."""
        self.assertTrue(PAHO_WS and os.path.exists(PAHO_WS), "WISP_PAHO_WS: paho_ws_client not built")
        for uri, extra in (("ws://127.0.0.1:%d/mqtt" % self.broker.port, []),
                           ("wss://localhost:%d/mqtt" % self.broker.wss_port, [ca_file()])):
            cp = subprocess.run([PAHO_WS, uri, "paho-c", "pahoc/t"] + extra, capture_output=True,
                                timeout=60, stdin=subprocess.DEVNULL)
            self.assertEqual(cp.returncode, 0, "%s: %s" % (uri, cp.stderr.decode(errors="replace")))
            self.assertEqual(cp.stdout.strip(), b"ok")
        self.wait_sys("ws/upgrades", lambda v: v >= 2)


NODE_CLIENT = r"""
const [mqttPath, url, version, ca] = process.argv.slice(2);
const mqtt = require(mqttPath);
const fs = require('fs');
const opts = {protocolVersion: Number(version), clientId: 'mqttjs-' + process.pid, reconnectPeriod: 0,
              connectTimeout: 10000};
if (ca) {
  opts.ca = fs.readFileSync(ca);
  opts.rejectUnauthorized = true;
}
const timer = setTimeout(() => { console.error('timed out'); process.exit(1); }, 30000);
const c = mqtt.connect(url, opts);
const left = new Set([0, 1, 2]);
c.on('error', (e) => { console.error('error: ' + e.message); process.exit(1); });
c.on('connect', () => {
  c.subscribe('mqttjs/t', {qos: 2}, (err, granted) => {
    if (err || granted[0].qos !== 2) { console.error('subscribe: ' + err); process.exit(1); }
    for (const q of [0, 1, 2]) c.publish('mqttjs/t', 'qos ' + q, {qos: q});
  });
});
c.on('message', (topic, payload, packet) => {
  if (payload.toString() === 'qos ' + packet.qos) left.delete(packet.qos);
  if (left.size === 0) {
    console.log('ok qos 0 1 2');
    clearTimeout(timer);
    c.end(false, {}, () => process.exit(0));
  }
});
"""


@skip_unless_wisp("wisp's ws listener")
class BrowserPage(WsTestCase):

    def test_mqttjs_browser_bundle_ws_and_wss(self):
        """MQTT.js's browser bundle in headless Chromium: QoS 0, 1, 2 round
        trips over ws:// and wss://, MQTT 3.1.1 and 5."""
        self.assertTrue(os.path.exists(CHROMIUM), "Debian's chromium package is needed")
        urls = ["ws://127.0.0.1:%d/mqtt" % self.broker.port, "wss://localhost:%d/mqtt" % self.broker.wss_port]
        cp = subprocess.run([NODE, BROWSER_JS, os.path.join(REPO_ROOT, "tests", "js"), SPKI] + urls,
                            capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
        out = cp.stdout.decode(errors="replace")
        self.assertEqual(cp.returncode, 0, out + cp.stderr.decode(errors="replace")[-2000:])
        for url in urls:
            for version in (4, 5):
                self.assertIn("ok v%d %s" % (version, url), out)


@skip_unless_wisp("wisp's ws listener")
class HttpRefusals(WsTestCase):
    WS_KEYS = {"max_header_bytes": 2048}

    def check_refused(self, data, status, log_pattern):
        before = self.count_log(log_pattern)
        got, text = raw_http(self.broker.port, data)
        self.assertEqual(got, status, text)
        self.assertIn("Connection: close", text)
        self.broker.wait_log(log_pattern, timeout=IO_TIMEOUT)
        self.honest_round_trip()
        self.assertEqual(self.count_log(log_pattern), before + 1, "logged once")

    def test_malformed_request_400(self):
        """A header line without a colon: 400, closed, logged once."""
        self.check_refused(b"GET /mqtt HTTP/1.1\r\nHost localhost\r\n\r\n", 400,
                           r"WebSocket handshake failed: upgrade refused with HTTP 400")
        self.wait_sys("ws/refused", lambda v: v == 1)

    def test_oversized_head_431(self):
        """A head over max_header_bytes: 431 after at most that many bytes,
        counted in $SYS/broker/ws/refused/head_too_large."""
        data = (b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n" +
                b"".join(b"X-Filler-%d: %s\r\n" % (i, b"a" * 100) for i in range(40)) + b"\r\n")
        self.check_refused(data, 431, r"upgrade refused with HTTP 431: request head too large")
        self.wait_sys("ws/refused/head_too_large", lambda v: v == 1)

    def test_not_an_upgrade_426(self):
        """A plain GET: 426 Upgrade Required, naming the version spoken."""
        self.check_refused(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n\r\n", 426,
                           r"upgrade refused with HTTP 426: not a WebSocket upgrade request")

    def test_plaintext_on_wss_port(self):
        """An upgrade request in plaintext on the wss port fails the TLS
        handshake (logged as TLS, counted in tls/handshakes/failed)."""
        pattern = r"closed: TLS handshake failed"
        status, _ = raw_http(self.broker.wss_port,
                             b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\r\n")
        self.assertIsNone(status)
        self.broker.wait_log(pattern, timeout=IO_TIMEOUT)
        self.wait_sys("tls/handshakes/failed", lambda v: v == 1)
        self.honest_round_trip()

    def test_mqtt_bytes_on_ws_port(self):
        """Raw MQTT (a CONNECT) sent to the ws port is not HTTP: refused, the broker serves on."""
        self.check_refused(connect_pkt("raw-on-ws"), 501, r"upgrade refused with HTTP 501")


@skip_unless_wisp("wisp's ws listener")
class Timeouts(WsTestCase):
    LIMITS = {"connect_timeout": 1}

    def test_silent_connections_time_out_in_their_handshake(self):
        """A ws connection that sends nothing, and a wss one that stops
        after TLS, are closed by connect_timeout, each logged as the
        handshake it was in."""
        silent = socket.create_connection(("127.0.0.1", self.broker.port), timeout=IO_TIMEOUT)
        self.on_cleanup(silent.close)
        tls = client_tls_context(ca_file()).wrap_socket(
            socket.create_connection(("127.0.0.1", self.broker.wss_port), timeout=IO_TIMEOUT),
            server_hostname="localhost")
        self.on_cleanup(tls.close)
        for s in (silent, tls):
            self.assertEqual(s.recv(1), b"")  # closed within IO_TIMEOUT
        self.broker.wait_log(r"connection from 127\.0\.0\.1:\d+ closed: WebSocket handshake timed out",
                             timeout=IO_TIMEOUT)
        self.assertEqual(self.count_log(r"closed: WebSocket handshake timed out"), 2)
        self.assertEqual(self.count_log(r"TLS handshake timed out"), 0)


@skip_unless_wisp("wisp's ws listener")
class TrustProxy(WsTestCase):
    WS_KEYS = {"trust_proxy": True}

    def test_forwarded_for_names_the_client(self):
        """Behind a trusted proxy the client is the last X-Forwarded-For
        entry: the broker logs it as the client's address."""
        c = WsClient(self.broker.port, upgrade=False)
        self.on_cleanup(c.close)
        status, head = c.upgrade(extra="X-Forwarded-For: 198.51.100.1, 203.0.113.7\r\n")
        self.assertEqual(status, 101, head)
        self.assertEqual(c.connect("behind-proxy"), 0)
        self.broker.wait_log(r"client behind-proxy connected from 203\.0\.113\.7:0", timeout=IO_TIMEOUT)


@skip_unless_wisp("wisp's ws listener")
class UntrustedForwardedFor(WsTestCase):

    def test_forwarded_for_ignored_without_trust_proxy(self):
        """Without trust_proxy, X-Forwarded-For changes nothing."""
        c = WsClient(self.broker.port, upgrade=False)
        self.on_cleanup(c.close)
        status, head = c.upgrade(extra="X-Forwarded-For: 203.0.113.7\r\n")
        self.assertEqual(status, 101, head)
        self.assertEqual(c.connect("no-proxy"), 0)
        self.broker.wait_log(r"client no-proxy connected from 127\.0\.0\.1:\d+", timeout=IO_TIMEOUT)
        self.assertNotIn("203.0.113.7", self.broker.log())


@skip_unless_wisp("wisp's ws listener")
class FrameViolations(WsTestCase):
    WS_KEYS = {"max_frame_size": 4096}

    def check_closed(self, frame, code, log_pattern, tls=False):
        c = self.ws("bad-%d" % code, tls=tls)
        before = self.count_log(log_pattern)
        c.sock.sendall(frame)
        self.assertEqual(c.wait_ws_close(), code)
        self.broker.wait_log(log_pattern, timeout=IO_TIMEOUT)
        self.honest_round_trip()
        self.assertEqual(self.count_log(log_pattern), before + 1, "logged once")

    def test_unmasked_frame_1002(self):
        """[RFC 6455 5.1] a client frame without a mask: close 1002."""
        self.check_closed(ws_frame(2, publish_pkt("x/y", b"p"), mask=False), 1002,
                          r"read error: WebSocket: unmasked client frame \(closing with 1002\)")
        self.wait_sys("ws/protocol_errors", lambda v: v == 1)

    def test_unmasked_frame_over_wss_1002(self):
        """The same over wss."""
        self.check_closed(ws_frame(2, publish_pkt("x/y", b"p"), mask=False), 1002,
                          r"unmasked client frame \(closing with 1002\)", tls=True)

    def test_oversized_frame_1009(self):
        """A frame over max_frame_size (4096 here): close 1009, counted."""
        self.check_closed(ws_frame(2, publish_pkt("x/y", b"z" * 5000)), 1009,
                          r"frame of \d+ bytes, over max_frame_size 4096 \(closing with 1009\)")
        self.wait_sys("ws/frames_too_large", lambda v: v == 1)

    def test_fragmented_ping_1002(self):
        """[RFC 6455 5.5] a control frame without FIN: close 1002."""
        self.check_closed(ws_frame(9, b"hi", fin=False), 1002,
                          r"control frame fragmented or over 125 bytes \(closing with 1002\)")

    def test_text_frame_1003(self):
        """[MQTT-6.0.0-1] MQTT goes in binary frames: a text frame is closed with 1003."""
        self.check_closed(ws_frame(1, b"hello"), 1003, r"text frame \(MQTT needs binary frames\)")

    def test_close_in_the_middle_of_a_packet(self):
        """Half a PUBLISH, then a close 1000: the close is echoed, the
        connection ends abnormally (the will goes out), logged once."""
        watcher = self.tcp("will-watcher")
        watcher.subscribe([("will/t", 1)])
        c = WsClient(self.broker.port)
        self.on_cleanup(c.close)
        c.send(connect_pkt("half", will=("will/t", b"gone", 1, False)))
        c.expect(2)
        pkt = publish_pkt("half/t", b"x" * 100, qos=1, pid=3)
        pattern = r"half \(127\.0\.0\.1:\d+\) disconnected: connection closed by peer: WebSocket closed by the client \(1000\)"
        c.sock.sendall(ws_frame(2, pkt[:40]) + ws_frame(8, b"\x03\xe8bye"))
        self.assertEqual(c.wait_ws_close(), 1000)
        self.assertEqual(watcher.recv_publish().payload, b"gone")
        self.broker.wait_log(pattern, timeout=IO_TIMEOUT)
        self.assertEqual(self.count_log(pattern), 1)


@skip_unless_wisp("wisp's ws listener")
class Streams(WsTestCase):

    def test_packets_across_frames_and_frames_with_many_packets(self):
        """A PUBLISH split over three frames (one of them a fragmented
        message), then ten PUBLISHes in one frame: all delivered, in order."""
        c = self.ws("stream")
        self.assertEqual(c.subscribe([("s/t", 0)]), [0])
        pkt = publish_pkt("s/t", b"split payload")
        c.sock.sendall(ws_frame(2, pkt[:3]) + ws_frame(2, pkt[3:9], fin=False) + ws_frame(0, pkt[9:]))
        self.assertEqual(c.recv_publish().payload, b"split payload")
        c.send(b"".join(publish_pkt("s/t", b"%d" % i) for i in range(10)))
        self.assertEqual([c.recv_publish().payload for _ in range(10)], [b"%d" % i for i in range(10)])

    def test_many_upgrades_from_one_address(self):
        """100 WebSocket upgrades under way at once from one address (a
        reverse proxy, a burst of browsers behind NAT) all complete: plain ws
        upgrades are not capped by max_handshakes_per_address (64)."""
        socks = []
        for _ in range(100):
            c = WsClient(self.broker.port, upgrade=False)
            self.on_cleanup(c.close)
            socks.append(c)
        for c in socks:
            status, head = c.upgrade()
            self.assertEqual(status, 101, head)
        for i, c in enumerate(socks[:5]):
            self.assertEqual(c.connect("burst-%d" % i), 0)

    def test_ping_pong(self):
        """A ping is answered with a pong carrying its payload; MQTT goes on."""
        c = self.ws("pinger")
        c.send_frame(9, b"are you there")
        self.assertEqual(c.wait_control(10), b"are you there")
        self.honest_round_trip()

    def offer(self, protocol):
        """An upgrade offering `protocol` on a new connection: (status, head)."""
        c = WsClient(self.broker.port, upgrade=False)
        self.on_cleanup(c.close)
        return c.upgrade(protocol=protocol)

    def test_refused_subprotocol(self):
        """Offering only other subprotocols is a 400; mqttv3.1 alone is chosen."""
        status, head = self.offer("chat")
        self.assertEqual(status, 400, head)
        status, head = self.offer("mqttv3.1")
        self.assertEqual(status, 101, head)
        self.assertIn("Sec-WebSocket-Protocol: mqttv3.1", head)
        self.assertIn("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", head)

    def test_subprotocol_case(self):
        """RFC 6455 11.3.4: subprotocol names "MUST ... match case-sensitively",
        and 4.2.2: the server answers "one of the values from the client's
        handshake". "MQTT" is not "mqtt": alone it is refused (as Mosquitto
        does), beside "mqttv3.1" the answer is "mqttv3.1", exactly."""
        status, head = self.offer("MQTT")
        self.assertEqual(status, 400, head)
        status, head = self.offer("MQTT, mqttv3.1")
        self.assertEqual(status, 101, head)
        self.assertRegex(head, r"\r\nSec-WebSocket-Protocol: mqttv3\.1(\r\n|$)")


@skip_unless_wisp("wisp's ws listener")
class SlowReader(WsTestCase):
    """A subscriber that stops reading is bounded by limits.max_output_buffer
    and output_buffer_timeout whether it speaks TCP or WebSocket."""

    LIMITS = {"max_output_buffer": 262144, "output_buffer_timeout": 2}
    MESSAGES = 3000
    PAYLOAD = 8192
    RSS_GROWTH_LIMIT_KIB = 32 * 1024

    def setUp(self):
        self._closers = []
        self.broker = WsBroker(self.LIMITS, asan_options="quarantine_size_mb=4")
        self.broker.start()

    def test_ws_and_tcp_stalled_subscribers_bounded_alike(self):
        """24 MiB at QoS 0 to a stalled TCP and a stalled WebSocket
        subscriber: both are disconnected for output over max_output_buffer,
        the broker's RSS grows less than 32 MiB, an honest client still
        completes a QoS 1 round trip."""
        ws = WsClient(self.broker.port)
        self.on_cleanup(ws.close)
        self.assertEqual(ws.connect("stalled-ws"), 0)
        self.assertEqual(ws.subscribe([("flood/t", 0)]), [0])
        tcp = self.tcp("stalled-tcp")
        self.assertEqual(tcp.subscribe([("flood/t", 0)]), [0])
        for s in (ws.sock, tcp.sock):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        base = self.broker.rss_kib()
        pub = self.tcp("flooder")
        peak = base
        payload = b"f" * self.PAYLOAD
        pattern = r"client stalled-(ws|tcp) \(127\.0\.0\.1:\d+\) disconnected: output over limits.max_output_buffer"
        deadline = time.monotonic() + 60
        sent = 0
        while time.monotonic() < deadline and self.count_log(pattern) < 2:
            if sent < self.MESSAGES:
                for _ in range(50):
                    pub.publish("flood/t", payload)
                    sent += 1
                pub.ping()
            else:
                time.sleep(0.1)
            peak = max(peak, self.broker.rss_kib())
        self.assertEqual(sorted(re.findall(pattern, self.broker.log())), ["tcp", "ws"],
                         "both stalled subscribers disconnected for their output")
        self.assertLess(peak - base, self.RSS_GROWTH_LIMIT_KIB)
        self.wait_sys("limits/output_stalled", lambda v: v == 2)
        self.honest_round_trip()


if __name__ == "__main__":
    main()
