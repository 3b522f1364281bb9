"""Shared pieces of the cluster e2e scripts (issue 16): Nats (a
nats-server -js on loopback with a temporary store), Node (a cluster node
with an http listener for /readyz and /metrics), InterestNode (one beating
every second), Relay (a TCP relay to nats-server a test cuts, so that one
node alone loses NATS) and ClusterCase, the TestCase base that starts nats-server
and the nodes, stops them and, when a test failed, prints the nodes' and
nats-server's logs before they are removed.

Not a test script itself (no NN_ prefix): 24_cluster.py and
28_cluster_interest.py re-export these names for the scripts that load
them."""

import glob
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wisp_e2e import IO_TIMEOUT, Broker, RawClient, free_port  # noqa: E402

NATS_BIN = os.environ.get("WISP_NATS_SERVER") or shutil.which("nats-server") or "/usr/sbin/nats-server"
PREFIX = "wisp"
WAIT = 10.0  # seconds any awaited cluster event may take
STOP_BOUND = 3.0  # seconds a node may take to exit on SIGTERM (cnats's close wait is 5)



def load_script(name, file):
    """Loads the e2e script file next to this one as module name (its file
    name, NN_*.py, cannot be imported), for its helpers."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(os.path.abspath(__file__)), file))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

class Nats:
    """nats-server with JetStream and a temporary store on loopback ports."""

    def __init__(self, max_payload=None):
        if not os.path.exists(NATS_BIN):
            raise AssertionError("nats-server not found (%s): install the Debian package nats-server "
                                 "(scripts/deps.sh --test)" % NATS_BIN)
        self.dir = tempfile.mkdtemp(prefix="wisp-nats-")
        self.host = "127.0.0.1"
        self.port = free_port()
        self.mport = free_port()
        self.proc = None
        # Bytes; None: nats-server's default (1 MiB). Read at each start,
        # so a test may restart the server with another one.
        self.max_payload = max_payload

    def command(self):
        cmd = [NATS_BIN, "-a", self.host, "-p", str(self.port), "-m", str(self.mport), "-js", "-sd",
               os.path.join(self.dir, "js")]
        if self.max_payload is not None:
            conf = os.path.join(self.dir, "nats.conf")  # no flag for it: a config file
            with open(conf, "w") as f:
                f.write("max_payload: %d\n" % self.max_payload)
            cmd += ["-c", conf]
        return cmd

    def start(self):
        log = open(os.path.join(self.dir, "nats.log"), "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("nats-server exited at start:\n" + self.log())
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                socket.create_connection(("127.0.0.1", self.mport), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nats-server did not listen within %ss:\n%s" % (WAIT, self.log()))

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart_losing_last_writes(self, stream="WISP"):
        """Kills nats-server, removes the stream's message files and starts
        it again: the stream ends lower than before, its consumers' state
        kept, as when nats-server is killed before it wrote its last
        messages (it acknowledges them first), every time."""
        self.kill()
        msgs = os.path.join(self.dir, "js", "jetstream", "$G", "streams", stream, "msgs")
        blocks = glob.glob(os.path.join(msgs, "*"))
        if not any(f.endswith(".blk") for f in blocks):
            raise AssertionError("nats-server's store is not laid out as expected: no %s/*.blk" % msgs)
        for f in blocks:
            os.remove(f)
        self.start()

    def stop(self):
        """SIGTERM: nats-server writes its streams' and consumers' state
        first (killed, it can forget what it acknowledged in its last
        milliseconds)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=WAIT)

    def log(self):
        with open(os.path.join(self.dir, "nats.log"), errors="replace") as f:
            return f.read()

    def connections(self):
        """Node name -> (its NATS subscriptions, messages NATS sent it):
        its main connection's and its data connection's (<node>-pub, which
        holds the filters' subscriptions while it is up) together."""
        url = "http://127.0.0.1:%d/connz?subs=1" % self.mport
        with urllib.request.urlopen(url, timeout=IO_TIMEOUT) as r:
            data = json.load(r)
        # _INBOX.*: replies to the node's JetStream requests and the
        # retained bucket's consumer (26_cluster_state tests those; the
        # client-id claims and shared groups are on <node>-share).
        # $WISP.<prefix>.fence.<run>: both connections' subscription to the
        # fence that moves the filters between them (48 tests it).
        out = {}
        for c in data.get("connections", []):
            name = c.get("name") or ""
            if name.endswith("-pub"):
                name = name[:-4]
            subs, sent = out.get(name, (set(), 0))
            subs |= {s for s in c.get("subscriptions_list") or []
                     if not s.startswith("_INBOX.") and not (s.startswith("$WISP.") and ".fence." in s)}
            out[name] = (subs, sent + c["out_msgs"])
        return out

    def wait_subjects(self, node, want, present=True):
        """Waits until node holds (or no longer holds) every subject of want."""
        deadline = time.monotonic() + WAIT
        subs = None
        while time.monotonic() < deadline:
            subs = self.connections().get(node, (set(), 0))[0]
            if (set(want) <= subs) if present else not (set(want) & subs):
                return subs
            time.sleep(0.05)
        raise AssertionError("node %s: NATS subscriptions %s, wanted %s%s" % (
            node, sorted(subs or []), "" if present else "none of ", sorted(want)))

    def jetstream_state(self):
        """Each stream's sequences and each consumer's positions, one line
        each, from /jsz (for a failed test's report; what went wrong when
        nats-server is not running)."""
        url = "http://127.0.0.1:%d/jsz?streams=true&consumers=true" % self.mport
        try:
            with urllib.request.urlopen(url, timeout=IO_TIMEOUT) as r:
                data = json.load(r)
        except (OSError, ValueError) as e:
            return "no /jsz: %s" % e
        lines = []
        for account in data.get("account_details") or []:
            for s in account.get("stream_detail") or []:
                st = s.get("state", {})
                lines.append("stream %s: messages %s, first %s, last %s" % (
                    s.get("name"), st.get("messages"), st.get("first_seq"), st.get("last_seq")))
                for c in s.get("consumer_detail") or []:
                    lines.append("  consumer %s: delivered %s, ack floor %s, ack pending %s, redelivered %s, "
                                 "pending %s" % (c.get("name"), c.get("delivered", {}).get("stream_seq"),
                                                 c.get("ack_floor", {}).get("stream_seq"), c.get("num_ack_pending"),
                                                 c.get("num_redelivered"), c.get("num_pending")))
        return "\n".join(lines)

    def consumer(self, stream, name):
        """The consumer's detail from /jsz (num_ack_pending, delivered,
        ack_floor, config, ...), or None when the stream has no such
        consumer."""
        url = "http://127.0.0.1:%d/jsz?streams=true&consumers=true&config=true" % self.mport
        with urllib.request.urlopen(url, timeout=IO_TIMEOUT) as r:
            data = json.load(r)
        for account in data.get("account_details") or []:
            for s in account.get("stream_detail") or []:
                if s.get("name") == stream:
                    for c in s.get("consumer_detail") or []:
                        if c.get("name") == name:
                            return c
        return None

    def in_msgs(self, name):
        """Messages the NATS connection called name published, or None
        when there is none of that name."""
        url = "http://127.0.0.1:%d/connz" % self.mport
        with urllib.request.urlopen(url, timeout=IO_TIMEOUT) as r:
            data = json.load(r)
        for c in data.get("connections", []):
            if c.get("name") == name:
                return c["in_msgs"]
        return None

    def out_msgs(self, node):
        return self.connections()[node][1]

    def publish_plain(self, subject, payloads):
        """Publishes payloads on subject as a plain NATS client (no Wisp
        headers), then waits for the server's PONG, so nats-server has them
        all."""
        with socket.create_connection((self.host, self.port), timeout=WAIT) as s:
            f = s.makefile("rb")
            if not f.readline().startswith(b"INFO "):
                raise AssertionError("nats-server sent no INFO")
            s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
            s.sendall(b"".join(b"PUB %s %d\r\n%s\r\n" % (subject.encode(), len(p), p) for p in payloads)
                      + b"PING\r\n")
            line = b""
            for _ in range(10):  # PONG, after the odd PING of the server's own
                line = f.readline()
                if not line or line.startswith(b"PONG"):
                    break
            if line != b"PONG\r\n":
                raise AssertionError("nats-server did not answer PING: %r" % line)


def shutdown_both(*socks):
    """Ends a relayed connection in both directions, whichever side ended
    it: the pump of the other direction then sees its end too."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Relay:
    """A TCP relay between one node and nats-server, which the test cuts
    (every connection closed, new ones refused) and restores: that node
    alone loses NATS, as behind a broken link. hold_upstream() stops
    passing on what the node writes (its connections stay open and it
    still reads what NATS sends) until release_upstream()."""

    def __init__(self, target_port):
        self.target = target_port
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = []
        self.refusing = False
        self.closed = False
        self.upstream_open = threading.Event()
        self.upstream_open.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                down, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                refusing = self.refusing
            if refusing:
                down.close()
                continue
            try:
                up = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                down.close()
                continue
            with self.lock:
                self.conns += [down, up]
            for src, dst, gate in ((down, up, self.upstream_open), (up, down, None)):
                threading.Thread(target=self._pump, args=(src, dst, gate), daemon=True).start()

    def _pump(self, src, dst, gate):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if gate:
                    gate.wait()  # close() opens it too
                dst.sendall(data)
        except OSError:
            pass
        shutdown_both(src, dst)

    def cut(self):
        with self.lock:
            self.refusing = True
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self):
        with self.lock:
            self.refusing = False

    def hold_upstream(self):
        self.upstream_open.clear()

    def release_upstream(self):
        self.upstream_open.set()

    def close(self):
        self.closed = True
        self.upstream_open.set()
        self.lsock.close()
        self.cut()


class Node(Broker):
    """A cluster node: its MQTT listener plus an http listener for /readyz
    and /metrics."""

    def __init__(self, name, nats_port, persistence=False):
        cfg = {"cluster": {"nats": ["nats://127.0.0.1:%d" % nats_port], "node": name}}
        if not persistence:
            cfg["persistence"] = {"enabled": False}
        super().__init__(config=cfg)
        self.http_port = free_port()

    def config(self):
        cfg = super().config()
        cfg["listeners"].append({"bind": "127.0.0.1", "port": self.http_port, "protocol": "http"})
        return cfg

    def get(self, path):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.http_port, path), timeout=IO_TIMEOUT) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def wait_ready(self, ready):
        """Waits until /readyz says ready (or not); returns its last answer."""
        deadline = time.monotonic() + WAIT
        while True:
            status, body = self.get("/readyz")
            if (status == 200) == ready or time.monotonic() > deadline:
                return status, body
            time.sleep(0.05)


SELECTIVE = "sending NATS only what they want"


class InterestNode(Node):
    """A cluster node beating every second: it knows the others' interest
    one interval (plus a second) after joining."""

    def config(self):
        cfg = super().config()
        cfg["cluster"]["interest_interval"] = 1
        return cfg

    def _env(self):
        # Debug builds send a new shared group's NATS queue SUB, and a new
        # filter's SUB on the data connection, up to a second late: a SUBACK
        # that waited only for the other nodes' answers would come before
        # nats-server has the SUB.
        return dict(super()._env(), WISP_DEBUG_DELAY_SHARE_SUB="1", WISP_DEBUG_DELAY_WRITER_SUB="1")


def stop_and_remove(nodes):
    """Stops the nodes of the dict nodes (each checked as Broker.stop
    does), then removes their directories; returns the errors."""
    errors = []
    for b in nodes.values():
        try:
            b.stop()
        except AssertionError as e:
            errors.append(str(e))
        except Exception:  # noqa: BLE001 - a node that never started
            pass
    for b in nodes.values():
        b.cleanup()
    return errors


def stop_shared_nodes(nodes):
    """A share_nodes class's cleanup: its nodes stopped after its last test;
    a node that did not stop cleanly is the class's error."""
    errors = stop_and_remove(nodes)
    if errors:
        raise AssertionError("\n".join(errors))


class ClusterCase(unittest.TestCase):
    """nats-server and the nodes node_names (of node_class; those in
    persistent with their store), started by setUp; each is waited for
    until it connected to NATS and, with settle, until it learnt the
    others' interest. Cleanups stop the nodes, then nats-server, even when
    setUp failed half way.

    With share_nodes, the class's first setUp starts them and they serve
    every test of the class; they are stopped (and checked as a stopped
    node is) after its last test, and a test's cleanups close only its
    clients. For a class whose tests neither stop, kill, add nor
    reconfigure a node or nats-server, and leave nothing another test
    could see (each its own client ids and topics, counters compared with
    their value at the test's start)."""

    node_class = Node
    node_names = ()
    persistent = ()
    settle = False
    start_nats_in_setup = True
    share_nodes = False
    wait = WAIT  # seconds setUp and start_node wait for a node's log line

    def setUp(self):
        if self.share_nodes:
            self._join_shared_nodes()
            return
        self._failures_before = self._failure_count()
        self.nodes = {}
        self.clients = []
        self.nats = None
        if self.start_nats_in_setup:
            self.start_nats(Nats())
        self.addCleanup(self.stop_nodes)
        # Registered after stop_nodes, so run before it: the nodes' logs are
        # still there.
        self.addCleanup(self.dump_logs_on_failure)
        self._start_node_names()

    def _start_node_names(self):
        # Started together, then waited for: quicker than one by one.
        for name in self.node_names:
            self.nodes[name] = self.make_node(name)
            self.nodes[name].start()
        for name in self.node_names:
            self.assertIsNotNone(self.nodes[name].wait_log("connected to NATS as node '%s'" % name, timeout=self.wait),
                                 "node %s never connected to NATS" % name)
        if self.settle:
            for name in self.node_names:
                self.assertIsNotNone(self.nodes[name].wait_log(SELECTIVE, timeout=self.wait),
                                     "node %s never learnt the others' interest" % name)

    def _join_shared_nodes(self):
        cls = type(self)
        self._failures_before = self._failure_count()
        self.clients = []
        self.addCleanup(self.close_clients)
        self.addCleanup(self.dump_logs_on_failure)
        if "_shared" in cls.__dict__:
            if cls._shared is None:
                self.fail("the class's nodes did not start (its first test says why)")
            self.nats, self.nodes = cls._shared
            return
        cls._shared = None  # tried once: a start that failed fails every test at once
        self.nats = Nats()
        self.nodes = {}
        cls.addClassCleanup(shutil.rmtree, self.nats.dir, True)
        cls.addClassCleanup(self.nats.kill)
        cls.addClassCleanup(stop_shared_nodes, self.nodes)
        self.nats.start()
        self._start_node_names()
        cls._shared = (self.nats, self.nodes)

    def start_nats(self, nats):
        """Starts nats; it is killed (and its store removed) after the
        nodes stopped when started before them."""
        self.nats = nats
        self.addCleanup(shutil.rmtree, nats.dir, True)
        self.addCleanup(nats.kill)
        nats.start()
        return nats

    def make_node(self, name, persistence=None):
        if persistence is None:
            persistence = name in self.persistent
        return self.node_class(name, self.nats.port, persistence=persistence)

    def start_node(self, name, offset=0, settled=None, **kw):
        """Starts node name (made by make_node the first time, started again
        on its directory after); waits until it connected to NATS and, if
        settled (default: settle), learnt the others' interest."""
        n = self.nodes.get(name)
        if n is None:
            n = self.nodes[name] = self.make_node(name, **kw)
        n.start()
        self.assertIsNotNone(n.wait_log("connected to NATS as node '%s'" % name, offset=offset, timeout=self.wait),
                             "node %s never connected to NATS" % name)
        if self.settle if settled is None else settled:
            self.assertIsNotNone(n.wait_log(SELECTIVE, offset=offset, timeout=self.wait),
                                 "node %s never learnt the others' interest" % name)
        return n

    def stop_nodes(self):
        self.close_clients()
        errors = stop_and_remove(self.nodes)
        if errors:
            self.fail("\n".join(errors))

    def close_clients(self):
        for c in self.clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - cleanup must not hide the test result
                pass

    def _failure_count(self):
        # A cleanup cannot see whether the test failed (unittest resets its
        # outcome for each cleanup): the result's lists tell it.
        result = getattr(getattr(self, "_outcome", None), "result", None)
        return len(getattr(result, "failures", ())) + len(getattr(result, "errors", ()))

    def dump_logs_on_failure(self):
        if self._failure_count() == getattr(self, "_failures_before", 0):
            return
        for name, b in self.nodes.items():
            try:
                sys.stderr.write("\n--- node %s ---\n%s\n" % (name, b.log_banner()))
            except OSError as e:
                sys.stderr.write("\n--- node %s: no log (%s) ---\n" % (name, e))
        if self.nats is not None:
            try:
                sys.stderr.write("\n--- nats-server ---\n%s\n" % self.nats.log())
            except OSError as e:
                sys.stderr.write("\n--- nats-server: no log (%s) ---\n" % e)
            sys.stderr.write("\n--- JetStream's streams and consumers ---\n%s\n" % self.nats.jetstream_state())

    def client(self, node, client_id):
        c = RawClient(self.nodes[node].port)
        self.clients.append(c)
        self.assertEqual(c.connect(client_id), 0)
        return c

    def expect_payloads(self, c, payloads):
        got = []
        for _ in payloads:
            p = c.recv_publish(timeout=WAIT)
            got.append((p.topic, p.payload))
        self.assertEqual(got, payloads)
