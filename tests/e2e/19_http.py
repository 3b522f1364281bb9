#!/usr/bin/python3
# ctest: TIMEOUT 240
"""19 http: the http listener protocol (issue 15) end to end.

- /metrics passes `promtool check metrics` and shows the broker's figures;
  a real Prometheus server, started here on a loopback port, scrapes Wisp
  and its query API returns the connected-clients figure.
- /healthz and /readyz answer 200.
- Malformed and oversized requests, a request never finished, and a
  listener's max_connections close only that connection, with its status,
  counted and logged; a keep-alive connection and an MQTT client carry on.
- max_requests ends a connection after that many responses.
- With require_auth "always", every path but the probes needs a user from
  the password file (HTTP Basic).
- The dashboard in headless chromium (playwright-core, tests/js): a topic
  published with mosquitto_pub appears in the page's tree with its value,
  and the page's publish form reaches a subscriber. The screenshot goes to
  WISP_DASHBOARD_SCREENSHOT (docs/dashboard.png when regenerating it).

promtool, prometheus, chromium, node and tests/js/node_modules are required:
configuring fails without them (cmake/WispTestTools.cmake), and so does
this script, never skipping."""

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import (REPO_ROOT, Broker, BrokerTestCase, RawClient, free_port, main,  # noqa: E402
                      make_passwd, publish_pkt, skip_unless_wisp)

PROMTOOL = os.environ.get("WISP_PROMTOOL") or shutil.which("promtool") or "/usr/bin/promtool"
PROMETHEUS = os.environ.get("WISP_PROMETHEUS") or shutil.which("prometheus") or "/usr/bin/prometheus"
CHROMIUM = os.environ.get("WISP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
NODE = os.environ.get("WISP_NODE") or shutil.which("node") or "/usr/bin/node"
JS_DIR = os.path.join(REPO_ROOT, "tests", "js")
WAIT = 15.0  # seconds, for every bounded wait here


def require_tools():
    """Fails (never skips) when a tool this test needs is missing."""
    missing = [p for p in (PROMTOOL, PROMETHEUS, CHROMIUM, NODE) if not os.access(p, os.X_OK)]
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "playwright-core")):
        missing.append("tests/js/node_modules/playwright-core (npm ci --prefix tests/js)")
    if missing:
        raise AssertionError("missing: %s (Debian packages prometheus, chromium, nodejs)" % ", ".join(missing))


class HttpBroker(Broker):
    """The MQTT listener plus one http listener (http_keys: its "http"
    object; http_listener: its other keys)."""

    def __init__(self, http_keys=None, http_listener=None, **kw):
        super().__init__(**kw)
        self.http_keys = dict(http_keys or {})
        self.http_listener = dict(http_listener or {})
        self.http_port = None

    def config(self):
        cfg = super().config()
        self.http_port = free_port()
        http = {"bind": "127.0.0.1", "port": self.http_port, "protocol": "http"}
        http.update(self.http_listener)
        if self.http_keys:
            http["http"] = self.http_keys
        cfg["listeners"].append(http)
        cfg.setdefault("sys_interval", 1)
        return cfg

    def start(self):
        super().start()
        deadline = time.monotonic() + WAIT
        while True:  # opened right after the MQTT listener, before the loop runs
            try:
                socket.create_connection(("127.0.0.1", self.http_port), timeout=1).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def raw_http(port, data, timeout=5.0):
    """Sends bytes, reads until the server closes: (bytes, closed). A reset
    counts as closed: a connection refused at accept is closed with its
    request unread."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                d = s.recv(65536)
            except socket.timeout:
                return out, False
            except ConnectionResetError:
                return out, True  # closed at accept with the request unread
            if not d:
                return out, True
            out += d
        return out, False
    finally:
        s.close()


class KeepAlive:
    """One HTTP/1.1 connection, requests one at a time."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def request(self, path, headers=""):
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (path, headers)).encode())
        while b"\r\n\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise AssertionError("closed before a response")
            self.buf += d
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        while len(rest) < length:
            d = self.sock.recv(65536)
            if not d:
                raise AssertionError("closed in a response body")
            rest += d
        self.buf = rest[length:]
        return head.decode(), rest[:length]

    def closed(self, timeout=5.0):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (socket.timeout, ConnectionResetError):
            return False

    def close(self):
        self.sock.close()


class HttpCase(BrokerTestCase):
    HTTP_KEYS = None
    HTTP_LISTENER = None
    CONFIG = None

    def setUp(self):
        require_tools()
        self._closers = []
        self.broker = HttpBroker(http_keys=self.HTTP_KEYS, http_listener=self.HTTP_LISTENER,
                                 limits=self.LIMITS, config=self.CONFIG)
        self.broker.start()

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.broker.http_port, path)

    def get(self, path, headers=None):
        req = urllib.request.Request(self.url(path), headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=WAIT) as r:
                return r.status, dict(r.headers), r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode()

    def metric(self, name):
        _, _, text = self.get("/metrics")
        m = re.search(r"^%s (\S+)$" % re.escape(name), text, re.M)
        return float(m.group(1)) if m else None

    def wait_metric(self, name, want):
        deadline = time.monotonic() + WAIT
        while self.metric(name) != want:
            if time.monotonic() > deadline:
                self.fail("%s never became %s (last %s)" % (name, want, self.metric(name)))
            time.sleep(0.05)

    def mqtt_round_trip(self):
        """An honest client's QoS 1 publish still comes back."""
        sub = self.raw()
        sub.subscribe([("honest/t", 1)])
        self.raw().publish("honest/t", b"still here", qos=1, pid=7)  # PUBACK awaited
        self.assertEqual(sub.recv_publish().payload, b"still here")


@skip_unless_wisp("the http listener is Wisp's")
class Metrics(HttpCase):
    def test_promtool_accepts_metrics(self):
        self.raw("metrics-client")
        status, headers, text = self.get("/metrics")
        self.assertEqual(status, 200)
        self.assertIn("text/plain; version=0.0.4", headers["Content-Type"])
        cp = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True,
                            timeout=30)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertEqual(cp.stdout + cp.stderr, "", "promtool lint findings")
        self.assertIn("# HELP wisp_clients_connected ", text)
        self.assertIn("# TYPE wisp_messages_dropped_total counter", text)
        self.assertRegex(text, r'wisp_messages_dropped_total\{reason="queue_full"\} 0')
        self.assertRegex(text, r'wisp_listener_up\{listener="127\.0\.0\.1:%d"\} 1' % self.broker.http_port)
        self.assertRegex(text, r'wisp_listener_connections\{listener="127\.0\.0\.1:%d"\} 1' % self.broker.port)
        self.assertEqual(self.metric("wisp_clients_connected"), 1.0)

    def test_prometheus_scrapes_wisp(self):
        clients = [self.raw("prom-%d" % i) for i in range(3)]
        self.assertEqual(len(clients), 3)
        work = tempfile.mkdtemp(prefix="wisp-prom-")
        self.on_cleanup(lambda: shutil.rmtree(work, ignore_errors=True))
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: wisp\n    static_configs:\n"
                    "      - targets: ['127.0.0.1:%d']\n" % self.broker.http_port)
        prom_port = free_port()
        log = open(os.path.join(work, "prometheus.log"), "wb")
        proc = subprocess.Popen([PROMETHEUS, "--config.file=" + os.path.join(work, "prometheus.yml"),
                                 "--storage.tsdb.path=" + os.path.join(work, "data"),
                                 "--web.listen-address=127.0.0.1:%d" % prom_port],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=work)
        log.close()

        def prom_log():
            with open(os.path.join(work, "prometheus.log"), errors="replace") as f:
                return f.read()[-3000:]

        def stop():
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.on_cleanup(stop)
        query = "http://127.0.0.1:%d/api/v1/query?query=%s" % (
            prom_port, urllib.parse.quote('wisp_clients_connected{job="wisp"}'))
        deadline = time.monotonic() + 60
        last = None
        while time.monotonic() < deadline:
            self.assertIsNone(proc.poll(), "prometheus exited: " + prom_log())
            try:
                with urllib.request.urlopen(query, timeout=5) as r:
                    last = json.load(r)
                result = last["data"]["result"]
                if result and result[0]["value"][1] == "3":
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.25)
        else:
            self.fail("Prometheus never returned wisp_clients_connected 3; last answer: %s\n%s" % (
                last, prom_log()))
        self.assertEqual(result[0]["metric"]["instance"], "127.0.0.1:%d" % self.broker.http_port)


@skip_unless_wisp("the http listener is Wisp's")
class Probes(HttpCase):
    def test_healthz_and_readyz(self):
        self.assertEqual(self.get("/healthz")[::2], (200, "ok\n"))
        self.assertEqual(self.get("/readyz")[::2], (200, "ready\n"))
        status, headers, _ = self.get("/nowhere")
        self.assertEqual(status, 404)

    def test_methods_and_head(self):
        c = KeepAlive(self.broker.http_port)
        self.on_cleanup(c.close)
        c.sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                       b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        out = b""
        while out.count(b"HTTP/1.1 200 OK") < 2 or not out.endswith(b"ok\n"):
            d = c.sock.recv(4096)
            self.assertTrue(d, "closed early: %r" % out)
            out += d
        head_resp, get_resp = out.split(b"HTTP/1.1 200 OK")[1:]
        self.assertIn(b"Content-Length: 3", head_resp)
        self.assertTrue(head_resp.endswith(b"\r\n\r\n"), "HEAD: no body")
        self.assertTrue(get_resp.endswith(b"\r\n\r\nok\n"))
        req = urllib.request.Request(self.url("/metrics"), data=b"x=1", method="POST")
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=WAIT)
        self.assertEqual(e.exception.code, 405)
        self.assertEqual(e.exception.headers["Allow"], "GET, HEAD")

    def test_dashboard_is_self_contained(self):
        """The page and everything it loads come from the broker: a CSP of
        'self' and no URL of another site in any of its files."""
        status, headers, html = self.get("/")
        self.assertEqual(status, 200)
        self.assertIn("text/html", headers["Content-Type"])
        self.assertIn("default-src 'self'", headers["Content-Security-Policy"])
        assets = re.findall(r'(?:src|href)="(/[^"]*\.(?:js|css))"', html)
        self.assertEqual(sorted(assets), ["/dashboard.css", "/dashboard.js"])
        for path in assets:
            st, h, body = self.get(path)
            self.assertEqual(st, 200, path)
            self.assertIn("default-src 'self'", h["Content-Security-Policy"])
            self.assertNotRegex(body, r"https?://", path)
        self.assertNotRegex(html, r"(src|href)=\"(https?:)?//")


@skip_unless_wisp("the http listener is Wisp's")
class Rebinding(HttpCase):
    """DNS rebinding: a page of evil.example whose name the attacker then
    resolves to 127.0.0.1 is same-origin with the broker for the browser,
    and its requests carry its own name as Host. Without credentials (a
    loopback peer), the API answers only Hosts that cannot be rebound."""

    def request(self, method, path, host, body=b"", extra=""):
        head = "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s" % (method, path, host, extra)
        if method == "POST":
            head += ("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n"
                     % len(body))
        out, _ = raw_http(self.broker.http_port, head.encode() + b"\r\n" + body)
        return int(out.split(b" ", 2)[1])

    def test_api_needs_a_loopback_host(self):
        port = self.broker.http_port
        body = b"topic=rebind%2Ft&payload=x"
        for host in ("127.evil.example", "127.0.0.1.evil.example", "localhost.evil.example",
                     "127.0.0.1:%d.evil.example" % port, "evil.example"):
            self.assertEqual(self.request("POST", "/api/publish", host, body), 403, host)
            for path in ("/api/clients", "/api/tree", "/api/stats"):
                self.assertEqual(self.request("GET", path, host), 403, (host, path))
            # Scrapers and probes address the broker by any name.
            for path in ("/metrics", "/healthz", "/readyz"):
                self.assertEqual(self.request("GET", path, host), 200, (host, path))
        for host in ("127.0.0.1:%d" % port, "localhost:%d" % port, "127.1.2.3", "LOCALHOST"):
            self.assertEqual(self.request("GET", "/api/clients", host), 200, host)
            self.assertEqual(self.request("POST", "/api/publish", host, body), 200, host)


    def test_publish_origin(self):
        """The form's POST names its page's origin (RFC 6454 7): this server
        by http, or by https through a TLS-terminating proxy that keeps the
        Host; any other origin is refused."""
        host = "localhost:%d" % self.broker.http_port
        body = b"topic=origin%2Ft&payload=x"
        for origin, status in (("http://" + host, 200), ("https://" + host, 200),
                               ("https://evil.example", 403), ("http://" + host + ".evil.example", 403),
                               ("ftp://" + host, 403), ("null", 403)):
            self.assertEqual(self.request("POST", "/api/publish", host, body, "Origin: %s\r\n" % origin),
                             status, origin)


@skip_unless_wisp("the http listener is Wisp's")
class PublishTopics(HttpCase):
    def post(self, form):
        req = urllib.request.Request(self.url("/api/publish"), data=form.encode())
        try:
            with urllib.request.urlopen(req, timeout=WAIT) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def test_topics_are_mqtt_utf8(self):
        """The API refuses a topic MQTT itself would: not well-formed UTF-8 or
        U+0000 ([MQTT-1.5.4-1], [MQTT-1.5.4-2]: a PUBLISH with one is
        malformed), or a control character (refused over MQTT too,
        [MQTT-1.5.4-3]). Retained, such a topic made every '#' subscriber
        drop its connection on the invalid string."""
        sub = self.sub("#")
        sub.wait_subscribed()
        for topic, why in (("utf8%FF", "UTF-8"), ("utf8%00x", "U+0000"), ("utf8%C3", "UTF-8"),
                           ("utf8%ED%A0%80", "UTF-8"),  # a surrogate, U+D800
                           ("utf8%C0%AF", "UTF-8"),  # an overlong '/'
                           ("utf8%01", "control"), ("utf8%C2%85", "control")):
            status, text = self.post("topic=%s&payload=x&retain=1" % topic)
            self.assertEqual(status, 400, topic)
            self.assertIn(why, text, topic)
        self.assertEqual(self.post("topic=utf8%2F%C3%A9t%C3%A9&payload=ok")[0], 200)
        self.assertEqual(sub.get()[:4:3], ("utf8/\u00e9t\u00e9", "ok"), "the first message '#' gets")


@skip_unless_wisp("the http listener is Wisp's")
class BadRequests(HttpCase):
    HTTP_KEYS = {"max_body_size": 100, "idle_timeout": 2}
    HTTP_LISTENER = {"max_header_bytes": 1024}

    def test_each_bad_request_closes_only_its_connection(self):
        good = KeepAlive(self.broker.http_port)
        self.on_cleanup(good.close)
        head, body = good.request("/healthz")
        self.assertIn("200 OK", head)
        cases = [
            (b"NOT HTTP AT ALL\r\n\r\n", (400, 501)),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4000 + b"\r\n\r\n", (431,)),
            # Still sending when refused: the 431 must survive the close
            # (a lingering close, not a reset).
            (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Filler: " + b"f" * 60 + b"\r\n" * 1 + b"\r\n".join(
                b"X-%d: %s" % (i, b"y" * 100) for i in range(300)) + b"\r\n\r\n", (431,)),
            (b"GET /" + b"p" * 4000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", (414, 431)),
            (b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5000\r\n\r\n", (413,)),
            (b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n", (411,)),
            (b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", (400, 505)),
            # RFC 9112 6.1: a final coding other than chunked "MUST respond with
            # the 400 (Bad Request) status code and then close": its body is
            # not read as the next request.
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
             b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
            # RFC 9112 3.2: "MUST respond with a 400 (Bad Request) status code to
            # any HTTP/1.1 request message that lacks a Host header field".
            (b"GET /healthz HTTP/1.1\r\n\r\n", (400,)),
            # RFC 9112 5.1: whitespace between a field name and colon, 400.
            (b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", (400,)),
            # RFC 9112 3.2.4: the asterisk-form is for OPTIONS only.
            (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", (400,)),
            # A length too large to read is still a length: 413, not 411.
            (b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000000000\r\n\r\n", (413,)),
        ]
        for data, statuses in cases:
            out, closed = raw_http(self.broker.http_port, data)
            self.assertTrue(closed, "connection left open after %r" % data[:40])
            m = re.match(rb"HTTP/1\.1 (\d+) ", out)
            self.assertTrue(m, "no status line for %r: %r" % (data[:40], out[:80]))
            self.assertIn(int(m.group(1)), statuses, data[:40])
            self.assertEqual(out.count(b"HTTP/1.1 "), 1, "one response to %r" % data[:40])
        # The others carry on.
        head, body = good.request("/readyz")
        self.assertIn("200 OK", head)
        self.mqtt_round_trip()
        self.assertEqual(self.metric("wisp_http_refused_total"), float(len(cases)))
        self.broker.wait_log(r"refusing a request from 127\.0\.0\.1:\d+ \(431\): request head too large")

    def test_content_length_with_whitespace(self):
        """RFC 9110 5.5: a field value excludes the whitespace around it, so
        "Content-Length: 18 " is a length of 18; HTTP/1.0 needs no Host."""
        body = b"topic=ows&payload=x"
        out, _ = raw_http(self.broker.http_port,
                          b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                          b"Content-Length: %d \r\n\r\n%s" % (len(body), body))
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out[:80])
        out, _ = raw_http(self.broker.http_port, b"GET /healthz HTTP/1.0\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out[:80])

    def test_expect_100_continue(self):
        """RFC 9110 10.1.1: to "Expect: 100-continue" the server sends "an
        immediate 100 (Continue) response to encourage the client to send
        the request's content", or at once a final status (413 here)."""
        body = b"topic=expect&payload=x"
        s = socket.create_connection(("127.0.0.1", self.broker.http_port), timeout=WAIT)
        self.on_cleanup(s.close)
        s.sendall(b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body))
        got = b""
        while b"\r\n\r\n" not in got:
            d = s.recv(4096)
            self.assertTrue(d, "closed before a 100 Continue")
            got += d
        self.assertEqual(got, b"HTTP/1.1 100 Continue\r\n\r\n")
        s.sendall(body)
        got = s.recv(4096)
        self.assertTrue(got.startswith(b"HTTP/1.1 200 "), got[:80])
        out, closed = raw_http(self.broker.http_port,
                               b"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
                               b"Content-Length: 5000\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 413 ") and closed, out[:80])

    def test_unfinished_request_is_closed_at_idle_timeout(self):
        s = socket.create_connection(("127.0.0.1", self.broker.http_port), timeout=10)
        self.on_cleanup(s.close)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        s.settimeout(10)
        self.assertEqual(s.recv(1), b"", "closed by idle_timeout")
        self.broker.wait_log(r"no complete request within idle_timeout")
        self.assertEqual(self.get("/healthz")[0], 200)
        self.assertEqual(self.metric("wisp_http_refused_total"), 1.0)

    def test_oversized_head_does_not_grow_the_broker(self):
        before = self.broker.rss_kib()
        for _ in range(50):
            s = socket.create_connection(("127.0.0.1", self.broker.http_port), timeout=5)
            try:
                s.sendall(b"GET / HTTP/1.1\r\n")
                try:
                    for _ in range(256):  # 1 MiB of header lines, refused after 1 KiB
                        s.sendall(b"X-Filler: " + b"z" * 4000 + b"\r\n")
                except OSError:
                    pass
            finally:
                s.close()
        self.assertEqual(self.get("/healthz")[0], 200)
        self.assertLess(self.broker.rss_kib() - before, 8 * 1024, "RSS grew by more than 8 MiB")


@skip_unless_wisp("the http listener is Wisp's")
class Limits(HttpCase):
    HTTP_KEYS = {"max_requests": 3}
    HTTP_LISTENER = {"max_connections": 2}

    def test_max_requests_ends_the_connection(self):
        c = KeepAlive(self.broker.http_port)
        self.on_cleanup(c.close)
        for i in range(3):
            head, _ = c.request("/healthz")
            self.assertIn("Connection: %s" % ("close" if i == 2 else "keep-alive"), head)
        self.assertTrue(c.closed())

    def test_max_connections_refuses_the_third(self):
        # start() probed the port: wait until that connection is gone (the
        # request asking counts itself).
        label = 'wisp_listener_connections{listener="127.0.0.1:%d"}' % self.broker.http_port
        self.wait_metric(label, 1.0)
        a, b = KeepAlive(self.broker.http_port), KeepAlive(self.broker.http_port)
        self.on_cleanup(a.close)
        self.on_cleanup(b.close)
        a.request("/healthz")
        b.request("/healthz")
        out, closed = raw_http(self.broker.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(closed)
        self.assertEqual(out, b"", "refused at accept, before any byte")
        label = 'wisp_listener_connections_refused_total{listener="127.0.0.1:%d"}' % self.broker.http_port
        head, body = a.request("/metrics")
        self.assertIn("%s 1\n" % label, body.decode())
        self.broker.wait_log(r"refusing 127\.0\.0\.1:\d+: connection limit reached \(the listener's max_connections\)")


@skip_unless_wisp("the http listener is Wisp's")
class BrokerWideLimit(HttpCase):
    LIMITS = {"max_connections": 2}

    def test_http_and_mqtt_share_max_connections(self):
        # start() probed both ports, and those connections may still count:
        # get one http connection in, then wait on it until they are gone.
        deadline = time.monotonic() + WAIT
        while True:
            try:
                web = KeepAlive(self.broker.http_port)
                web.request("/healthz")
                break
            except (OSError, AssertionError):
                self.assertLess(time.monotonic(), deadline, "no http connection admitted")
                time.sleep(0.05)
        self.on_cleanup(web.close)
        mqtt_conns = 'wisp_listener_connections{listener="127.0.0.1:%d"} 0\n' % self.broker.port
        while mqtt_conns not in web.request("/metrics")[1].decode():
            self.assertLess(time.monotonic(), deadline, "the MQTT probe connection never went")
            time.sleep(0.05)
        refused_before = float(re.search(r"(?m)^wisp_connections_refused_total (\S+)$",
                                         web.request("/metrics")[1].decode()).group(1))
        self.raw("first")  # 2 of 2: one http, one MQTT
        late = RawClient(self.broker.port)
        self.on_cleanup(late.close)
        late.wait_closed()
        out, closed = raw_http(self.broker.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(closed)
        self.assertEqual(out, b"")
        _, body = web.request("/metrics")
        self.assertIn("\nwisp_connections_refused_total %d\n" % (refused_before + 2), body.decode())
        self.broker.wait_log(r"connection limit reached \(limits\.max_connections\)")


@skip_unless_wisp("the http listener is Wisp's")
class Auth(HttpCase):
    HTTP_KEYS = {"require_auth": "always"}

    def setUp(self):
        require_tools()
        self.pw_dir = tempfile.mkdtemp(prefix="wisp-http-auth-")
        path = make_passwd(os.path.join(self.pw_dir, "passwd"), {"admin": "s3cret"})
        self.CONFIG = {"auth": {"password_file": path}}
        super().setUp()

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.pw_dir, ignore_errors=True)

    def basic(self, user, password):
        return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()}

    def test_basic_auth(self):
        status, headers, _ = self.get("/metrics")
        self.assertEqual(status, 401)
        self.assertIn('Basic realm="wisp"', headers["WWW-Authenticate"])
        self.assertEqual(self.get("/api/stats", self.basic("admin", "wrong"))[0], 401)
        self.assertEqual(self.get("/api/stats", self.basic("nobody", "s3cret"))[0], 401)
        self.assertEqual(self.get("/metrics", self.basic("admin", "s3cret"))[0], 200)
        self.assertEqual(self.get("/", self.basic("admin", "s3cret"))[0], 200)
        # Authenticated, the Host is not what protects the API.
        self.assertEqual(self.get("/api/stats", dict(self.basic("admin", "s3cret"), Host="wisp.example"))[0], 200)
        self.assertEqual(self.get("/healthz")[0], 200, "probes stay open")
        self.assertEqual(self.get("/readyz")[0], 200, "probes stay open")
        status, _, text = self.get("/metrics", self.basic("admin", "s3cret"))
        self.assertRegex(text, r"(?m)^wisp_http_auth_failures_total 3$")


    def auth_header(self, user, password):
        return "Authorization: %s\r\n" % self.basic(user, password)["Authorization"]

    def test_credentials_are_checked_again_when_they_change(self):
        c = KeepAlive(self.broker.http_port)
        self.on_cleanup(c.close)
        head, _ = c.request("/metrics", self.auth_header("admin", "s3cret"))
        self.assertIn(" 200 ", head)
        head, _ = c.request("/metrics", self.auth_header("admin", "s3cret"))
        self.assertIn(" 200 ", head)
        head, _ = c.request("/api/stats", self.auth_header("admin", "guess"))
        self.assertIn(" 401 ", head, "a wrong password after a right one on the same connection")
        self.assertTrue(c.closed(), "one wrong guess per connection")

    def test_reload_makes_a_connection_verify_again(self):
        c = KeepAlive(self.broker.http_port)
        self.on_cleanup(c.close)
        head, _ = c.request("/metrics", self.auth_header("admin", "s3cret"))
        self.assertIn(" 200 ", head)
        make_passwd(os.path.join(self.pw_dir, "passwd"), {"admin": "n3w"})
        offset = self.broker.log_size()
        self.broker.reload()
        self.broker.wait_log(r"configuration reloaded", offset)
        head, _ = c.request("/metrics", self.auth_header("admin", "s3cret"))
        self.assertIn(" 401 ", head, "the old password after a reload")


ACL_TEXT = """topic write anon/#
user dashboard
topic read sensors/#
user op
topic read #
topic write cmd/#
"""


class AclPublish(HttpCase):
    """POST /api/publish publishes as the request's Basic user (anonymous
    without credentials), under auth.acl_file exactly as an MQTT client of
    that user: write access to the topic, or 403."""

    def setUp(self):
        require_tools()
        self.pw_dir = tempfile.mkdtemp(prefix="wisp-http-acl-")
        passwd = make_passwd(os.path.join(self.pw_dir, "passwd"), {"dashboard": "s3cret", "op": "oppw"})
        acl = os.path.join(self.pw_dir, "acl")
        with open(acl, "w") as f:
            f.write(ACL_TEXT)
        self.CONFIG = {"auth": {"password_file": passwd, "acl_file": acl}}
        super().setUp()
        self.watch = self.sub("#", extra=("-u", "op", "-P", "oppw"))
        self.watch.wait_subscribed()

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.pw_dir, ignore_errors=True)

    def post(self, topic, user=None):
        headers = {"Host": "127.0.0.1"}
        if user:
            headers["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % user).encode()).decode()
        req = urllib.request.Request(self.url("/api/publish"), data=("topic=%s&payload=x" % topic).encode(),
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=WAIT) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


@skip_unless_wisp("the http listener is Wisp's")
class AclPublishUsers(AclPublish):
    HTTP_KEYS = {"require_auth": "always"}

    def test_users_publish_what_the_acl_lets_them(self):
        for topic, user in (("sensors/x", ("dashboard", "s3cret")),  # read only
                            ("cmd/x", ("dashboard", "s3cret")),  # no rule
                            ("anon/x", ("dashboard", "s3cret")),  # the anonymous block is not theirs
                            ("other/x", ("op", "oppw"))):
            status, text = self.post(topic, user)
            self.assertEqual(status, 403, (topic, user))
            self.assertIn("ACL", text)
        self.assertEqual(self.post("cmd/x", ("op", "oppw"))[0], 200)
        self.assertEqual(self.watch.get()[0], "cmd/x", "no denied message was routed before it")
        self.broker.wait_log(r"publish to 'sensors/x' from 127\.0\.0\.1:\d+ as user 'dashboard' denied by the ACL")


@skip_unless_wisp("the http listener is Wisp's")
class AclPublishAnonymous(AclPublish):
    def test_anonymous_publishes_as_an_anonymous_client(self):
        """Without credentials (a loopback peer) the rules are the
        anonymous block's: the lines before any "user"."""
        self.assertEqual(self.post("cmd/x")[0], 403)
        self.assertEqual(self.post("anon/x")[0], 200)
        self.assertEqual(self.watch.get()[0], "anon/x")
        self.broker.wait_log(r"publish to 'cmd/x' from 127\.0\.0\.1:\d+ as anonymous denied by the ACL")


@skip_unless_wisp("the http listener is Wisp's")
class TopicTree(HttpCase):
    """The tree walk is bounded per request: a level with thousands of
    children comes a page at a time, and the table keeps at most
    dashboard.max_topics topics."""
    HTTP_KEYS = {"tree_page_size": 100}
    CONFIG = {"dashboard": {"max_topics": 2000, "max_value_bytes": 8}}

    def test_pages_and_the_topic_bound(self):
        pub = self.raw("many")
        batch = b"".join(publish_pkt("many/%d" % i, b"value-%d" % i) for i in range(3000))
        pub.send(batch)
        pub.ping()  # everything before the PINGRESP was handled
        status, _, text = self.get("/api/tree?path=many")
        self.assertEqual(status, 200)
        page = json.loads(text)
        self.assertEqual(page["total"], 2000, "max_topics: the 1000 oldest forgotten")
        self.assertEqual(len(page["children"]), 100, "one page of tree_page_size")
        self.assertTrue(all(int(c["name"]) >= 1000 for c in page["children"]), "the newest kept")
        self.assertTrue(all(len(c["value"]) <= 8 and c["size"] >= 7 for c in page["children"]))
        last = json.loads(self.get("/api/tree?path=many&offset=1950")[2])
        self.assertEqual(len(last["children"]), 50)
        top = json.loads(self.get("/api/tree")[2])
        self.assertIn("many", [c["name"] for c in top["children"]])
        # the 1000 oldest "many" topics, and the $SYS ones published before them
        self.assertGreaterEqual(self.metric("wisp_dashboard_topics_evicted_total"), 1000.0)
        self.assertLessEqual(self.metric("wisp_dashboard_topics"), 2000.0)


    def test_values_are_utf8_json(self):
        """RFC 8259 8.1: JSON text MUST be UTF-8. A binary payload's bytes
        that are not UTF-8 show as U+FFFD; a value cut at max_value_bytes (8
        here) ends at a character, not in half of one."""
        pub = self.raw("bin")
        pub.send(publish_pkt("bin/raw", b"\xff\xfe\x00ab\xc3") + publish_pkt("bin/cut", "aéééé".encode()) +
                 publish_pkt("bin/ok", "é€".encode()))
        pub.ping()
        with urllib.request.urlopen(self.url("/api/tree?path=bin"), timeout=WAIT) as r:
            body = r.read()
        values = {c["name"]: c["value"] for c in json.loads(body.decode("utf-8"))["children"]}  # strict
        self.assertEqual(values, {"raw": "\ufffd\ufffd\x00ab\ufffd", "cut": "aééé", "ok": "é€"})

    def test_empty_first_level(self):
        """No path is the top; "path=" is the empty first level of "/lead/x"
        ([MQTT-4.7.1-3]: a level may be empty), a child of the top."""
        pub = self.raw("lead")
        pub.send(publish_pkt("/lead/x", b"v1") + publish_pkt("top/y", b"v2"))
        pub.ping()

        def names(query):
            page = json.loads(self.get("/api/tree" + query)[2])
            return page["path"], sorted(c["name"] for c in page["children"])
        path, top = names("")
        self.assertIsNone(path)
        self.assertIn("", top)
        self.assertIn("top", top)
        self.assertEqual(names("?path="), ("", ["lead"]))
        self.assertEqual(names("?path=%2Flead"), ("/lead", ["x"]))
        self.assertEqual(names("?path=top"), ("top", ["y"]))


@skip_unless_wisp("the http listener is Wisp's")
class Dashboard(HttpCase):
    def test_dashboard_in_chromium(self):
        sub = self.sub("dash/#", qos=1)
        sub.wait_subscribed()
        shot = os.environ.get("WISP_DASHBOARD_SCREENSHOT") or os.path.join(self.broker.dir, "dashboard.png")
        env = dict(os.environ, WISP_CHROMIUM=CHROMIUM)
        proc = subprocess.Popen([NODE, os.path.join(JS_DIR, "dashboard_test.js"), self.url("/"), shot],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=JS_DIR)
        self.on_cleanup(proc.kill)
        lines = []

        def expect(word):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                lines.append(line.rstrip("\n"))
                if line.startswith(word + " ") or line.strip() == word:
                    return line.rstrip("\n")
                if line.startswith("FAIL"):
                    break
            self.fail("the browser never said %s:\n%s" % (word, "\n".join(lines)))

        expect("READY")
        # A few live sensors, then the one the page must show.
        for room, value in (("room1", "21.5"), ("room2", "19.0"), ("hall", "17.25")):
            self.pub("dash/%s/temp" % room, value)
        self.pub("dash/room1/humidity", "48", retain=True)
        self.assertEqual(sub.get()[3], "21.5")
        proc.stdin.write("PUBLISHED dash/room1/temp 21.5\n")
        proc.stdin.flush()
        self.assertEqual(expect("SEEN"), "SEEN 21.5")
        self.assertIn("published 13 bytes to dash/room1/form", expect("FORM"))
        want = ("dash/room1/form", False, 1, "from the form")
        deadline = time.monotonic() + WAIT
        while True:
            msg = sub.get(timeout=max(0.1, deadline - time.monotonic()))
            if msg[0] == want[0]:
                self.assertEqual(msg, want)
                break
        expect("SHOT")
        # A topic with an empty first level ([MQTT-4.7.1-3] allows zero-length
        # levels): its level "" shows under the top, and opening it neither
        # shows the top again nor stops the page's refresh.
        self.pub("/dash/lead", "slash-value", retain=True)
        proc.stdin.write("LEADING /dash/lead slash-value\n")
        proc.stdin.flush()
        self.assertEqual(expect("SLASH"), "SLASH slash-value (empty)")
        expect("DONE")
        self.assertEqual(proc.wait(timeout=30), 0, "\n".join(lines))
        self.assertTrue(os.path.getsize(shot) > 10000, "screenshot saved")


if __name__ == "__main__":
    main()
