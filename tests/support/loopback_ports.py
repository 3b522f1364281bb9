"""Loopback ports for the servers the tests start (tests/e2e and
tests/e2e_clients import this).

A server's port is taken from outside the kernel's range for outgoing
connections (/proc/sys/net/ipv4/ip_local_port_range). A client that keeps
retrying a stopped server's port (a node's connections while the test
restarts nats-server, a bridge while its remote is down) can otherwise be
given that very port as its own source port and connect to itself (TCP
simultaneous open: 2 in 60,000 connects to a closed port in the range,
tried on a development machine on 2026-12-03): it then holds the port, and
the server cannot start on it again.
"""
import os
import random
import socket

_ports_given = set()
_held_sockets = []
_pick = random.Random(os.getpid() ^ int.from_bytes(os.urandom(8), "little"))


def _outgoing_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _bind_free(port):
    """Whether nothing holds port on 127.0.0.1 now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port():
    """A loopback port nothing listens on, outside the outgoing range, never
    one this process has been given before (two picks for one
    configuration, a node's MQTT and http listeners, must differ)."""
    low, high = _outgoing_range()
    spans = [(p, q) for p, q in ((10000, low - 1), (high + 1, 65535)) if p <= q]
    if spans:
        weights = [q - p + 1 for p, q in spans]
        for _attempt in range(200):
            p, q = _pick.choices(spans, weights)[0]
            port = _pick.randint(p, q)
            if port not in _ports_given and _bind_free(port):
                _ports_given.add(port)
                return port
        raise RuntimeError("no free loopback port outside %d-%d after 200 tries" % (low, high))
    # The range covers every port: the kernel's pick, as before.
    for _attempt in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ports_given:
            _ports_given.add(port)
            return port
    raise RuntimeError("no loopback port this process has not used yet after 100 tries")


def refused_port():
    """A loopback port every connect to is refused, for this process's
    life: bound, never listening, so no other test running beside this one
    takes it, and no connect gets it as its own source port (a port only
    closed again can be both: tests/e2e_clients/clitest.py met it)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    _held_sockets.append(s)
    port = s.getsockname()[1]
    _ports_given.add(port)
    return port
