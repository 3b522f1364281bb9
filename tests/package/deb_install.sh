#!/bin/sh
# CTest package_deb: the Debian package, built as a user would build it,
# installs on a fresh Debian 12 and gives a working, verifiable service.
#
#   deb_install.sh SRC_DIR WORK_DIR
#
# 1. configures SRC_DIR with the release preset (and CMAKE_INSTALL_PREFIX=/usr)
#    in WORK_DIR/build, builds, and runs `cpack -G DEB`;
# 2. checks the package's control data: library dependencies found by
#    dpkg-shlibdeps, conffiles, maintainer scripts;
# 3. makes a fresh root with `debootstrap --variant=minbase --include=systemd
#    bookworm` (the minimal base plus the init system every Debian 12 install
#    has) and runs `apt install ./wisp_*.deb` in it, as the README says;
# 4. in that root: the wisp user exists, nothing was started or enabled,
#    `wisp --check-config /etc/wisp/wisp.json` passes, the broker runs as
#    wisp and carries a retained message from wisp_pub to wisp_sub, logrotate
#    (installed for it) rotates /var/log/wisp/wisp.log with the snippet, and
#    `systemd-analyze verify` and `security --offline` accept the unit;
# 5. purges the package: its files and data go, the user stays.
#
# Needs root (debootstrap, chroot) and deb.debian.org (WISP_DEBIAN_MIRROR
# overrides it). Each step prints the seconds since the start; measured on
# the 2-core development VM: 100 to 231 s, 60 to 165 s of it debootstrap.
# WISP_KEEP_ROOT=1 keeps WORK_DIR/root for inspection.
set -eu
PATH=$PATH:/usr/sbin:/sbin

SRC=$(cd "$1" && pwd)
WORK=$2
MIRROR=${WISP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
ROOT=$WORK/root
START=$(date +%s)
BROKER_PID=""

step() { echo "[$(($(date +%s) - START)) s] $*"; }
fail() {
	echo "FAIL: $*"
	exit 1
}
cleanup() {
	if [ -n "$BROKER_PID" ]; then
		kill "$BROKER_PID" 2>/dev/null || true
	fi
	if [ "${WISP_KEEP_ROOT:-}" != 1 ]; then
		rm -rf "$ROOT"
	fi
}
trap cleanup EXIT
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 "$@"; }

[ "$(id -u)" -eq 0 ] || fail "the package test needs root (debootstrap and chroot)"
for tool in debootstrap systemd-analyze dpkg-shlibdeps cpack chroot; do
	command -v $tool >/dev/null || fail "$tool not found (scripts/deps.sh --test installs it)"
done

rm -rf "$WORK"
mkdir -p "$WORK"

step "release build and cpack -G DEB"
cmake -S "$SRC" --preset release -B "$WORK/build" -DCMAKE_INSTALL_PREFIX=/usr \
	-DWISP_BUILD_BENCH=OFF >"$WORK/configure.log" 2>&1 || { cat "$WORK/configure.log"; fail "configure"; }
cmake --build "$WORK/build" -j 2 >"$WORK/build.log" 2>&1 || { tail -50 "$WORK/build.log"; fail "build"; }
(cd "$WORK/build" && cpack -G DEB) >"$WORK/cpack.log" 2>&1 || { cat "$WORK/cpack.log"; fail "cpack -G DEB"; }
set -- "$WORK"/build/wisp_*.deb
[ $# -eq 1 ] && [ -f "$1" ] || fail "cpack made no single wisp_*.deb: $*"
DEB=$1
step "built $(basename "$DEB") ($(stat -c %s "$DEB") bytes)"

depends=$(dpkg-deb -f "$DEB" Depends)
echo "Depends: $depends"
for dep in 'libc6 (>=' 'libcjson1' 'libhttp-parser2.9' 'libnats3.4' 'adduser' 'procps'; do
	case "$depends" in *"$dep"*) ;; *) fail "Depends lacks $dep (dpkg-shlibdeps or CPACK_DEBIAN_PACKAGE_DEPENDS)" ;; esac
done
# libwslay is only the WebSocket fuzz target's reference parser, not linked.
case "$depends" in *libwslay*) fail "Depends names libwslay, which the broker does not link: $depends" ;; esac
# mbed TLS is linked statically, with its allocations counted (packaging/README.md).
case "$depends" in *libmbed*) fail "Depends names mbed TLS, which is linked statically: $depends" ;; esac
dpkg-deb -I "$DEB" conffiles | grep -qx /etc/wisp/wisp.json || fail "/etc/wisp/wisp.json is not a conffile"
for script in postinst prerm postrm; do
	dpkg-deb -I "$DEB" $script >/dev/null || fail "no $script in the package"
done
if dpkg-deb -I "$DEB" postinst | grep -Eq 'systemctl (start|enable|restart)|deb-systemd-helper enable|invoke-rc.d [a-z]+ start'; then
	fail "postinst enables or starts the service"
fi

step "debootstrap --variant=minbase --include=systemd bookworm $MIRROR"
debootstrap --variant=minbase --include=systemd bookworm "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
	{ tail -30 "$WORK/debootstrap.log"; fail "debootstrap"; }
in_root getent passwd wisp >/dev/null && fail "the fresh root already has a wisp user"

step "apt install ./$(basename "$DEB")"
cp "$DEB" "$ROOT/tmp/"
# apt refuses to start services under policy-rc.d 101, as Debian's build
# chroots do; the package must not try anyway (checked below).
chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
	sh -c "cd /tmp && apt-get update -qq && apt install -y ./$(basename "$DEB")" >"$WORK/apt.log" 2>&1 ||
	{ cat "$WORK/apt.log"; fail "apt install ./$(basename "$DEB") in a fresh bookworm root"; }
grep -E '^(Setting up|Unpacking) ' "$WORK/apt.log"

step "checks in the installed root"
pw=$(in_root getent passwd wisp) || fail "postinst made no wisp user"
echo "$pw"
uid=$(echo "$pw" | cut -d: -f3)
[ "$uid" -lt 1000 ] || fail "wisp is not a system user (uid $uid)"
[ "$(echo "$pw" | cut -d: -f6)" = /var/lib/wisp ] || fail "wisp's home is not /var/lib/wisp"
[ "$(echo "$pw" | cut -d: -f7)" = /usr/sbin/nologin ] || fail "wisp can log in"
in_root getent group wisp >/dev/null || fail "no wisp group"
for f in /usr/sbin/wisp /usr/bin/wisp_pub /usr/bin/wisp_sub /usr/bin/wisp_sensor /usr/bin/wisp_passwd; do
	[ -x "$ROOT$f" ] || fail "$f missing"
done
for f in /etc/wisp/wisp.json /etc/logrotate.d/wisp /usr/lib/systemd/system/wisp.service \
	/usr/share/man/man8/wisp.8.gz /usr/share/man/man5/wisp.json.5.gz /usr/share/man/man1/wisp_pub.1.gz \
	/usr/share/man/man1/wisp_sub.1.gz /usr/share/man/man1/wisp_sensor.1.gz /usr/share/man/man1/wisp_passwd.1.gz; do
	[ -f "$ROOT$f" ] || fail "$f missing"
done
# Each page renders without a warning (man-db is not in the fresh root).
for page in "$ROOT"/usr/share/man/man*/wisp*.gz; do
	warnings=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null) || fail "man -l $page"
	[ -z "$warnings" ] || fail "$page: $warnings"
done
# Started nothing: no wisp process from the root, no enablement symlink.
for p in /proc/[0-9]*; do
	exe=$(readlink "$p/exe" 2>/dev/null) || continue
	[ "$exe" = "$ROOT/usr/sbin/wisp" ] && fail "a wisp process runs after the install (pid ${p#/proc/})"
done
if find "$ROOT/etc/systemd/system" -name 'wisp.service' | grep -q .; then
	fail "the install enabled wisp.service"
fi

out=$(in_root /usr/sbin/wisp --check-config /etc/wisp/wisp.json 2>&1) || fail "wisp --check-config: $out"
echo "$out"
[ "$out" = "/etc/wisp/wisp.json: configuration OK" ] || fail "unexpected --check-config output: $out"

# The broker runs as wisp on the shipped configuration (port moved to a free
# one; /var/lib/wisp made as StateDirectory= would) and carries a message.
gid=$(echo "$pw" | cut -d: -f4)
install -d -o "$uid" -g "$gid" -m 0750 "$ROOT/var/lib/wisp"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
chroot --userspec="$uid:$gid" "$ROOT" /usr/sbin/wisp -c /etc/wisp/wisp.json -p "$port" >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!
tries=0
until grep -q 'running (config /etc/wisp/wisp.json)' "$WORK/broker.log"; do
	tries=$((tries + 1))
	[ $tries -le 200 ] && kill -0 $BROKER_PID 2>/dev/null || { cat "$WORK/broker.log"; fail "the broker did not start"; }
	sleep 0.05
done
in_root wisp_pub -h 127.0.0.1 -p "$port" -q 1 -r -t package/check -m installed || fail "wisp_pub to the installed broker"
got=$(in_root wisp_sub -h 127.0.0.1 -p "$port" -q 1 -t package/check -C 1 -W 10) || fail "wisp_sub from the installed broker"
[ "$got" = installed ] || fail "wisp_sub received '$got'"
kill -TERM $BROKER_PID
wait $BROKER_PID || { cat "$WORK/broker.log"; fail "the broker did not stop cleanly on SIGTERM"; }
BROKER_PID=""
[ -n "$(find "$ROOT/var/lib/wisp" -uid "$uid" -type f)" ] || fail "the broker wrote no state into /var/lib/wisp"
echo "broker ran as wisp on port $port: retained message round trip, clean stop"

step "logrotate /etc/logrotate.d/wisp"
in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends logrotate' \
	>"$WORK/logrotate-install.log" 2>&1 || { cat "$WORK/logrotate-install.log"; fail "apt-get install logrotate"; }
install -d -o "$uid" -g "$gid" -m 0750 "$ROOT/var/log/wisp"
echo "a line" >"$ROOT/var/log/wisp/wisp.log"
out=$(in_root logrotate -v -f -s /tmp/logrotate.state /etc/logrotate.d/wisp 2>&1) ||
	fail "logrotate -f /etc/logrotate.d/wisp: $out"
echo "$out" | grep -qi 'error' && fail "logrotate: $out"
[ -f "$ROOT/var/log/wisp/wisp.log.1" ] && [ ! -e "$ROOT/var/log/wisp/wisp.log" ] ||
	fail "logrotate did not rename wisp.log to wisp.log.1 (nocreate: the broker makes the new one on SIGHUP)"
echo "logrotate renamed /var/log/wisp/wisp.log to wisp.log.1"

step "systemd-analyze verify and security"
# --man=no: man-db is not in the root (the pages were checked above).
out=$(cd "$WORK" && systemd-analyze verify --man=no --root="$ROOT" wisp.service 2>&1) ||
	fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warns: $out"
exposure=$(systemd-analyze security --offline=yes --root="$ROOT" wisp.service 2>&1 | grep 'Overall exposure') ||
	fail "systemd-analyze security --offline printed no exposure"
echo "$exposure"
level=$(echo "$exposure" | sed -E 's/.*: ([0-9.]+) .*/\1/')
awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }' || fail "unit exposure $level, above 2.0"

step "apt purge wisp"
in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get purge -y wisp' >"$WORK/purge.log" 2>&1 ||
	{ cat "$WORK/purge.log"; fail "apt-get purge wisp"; }
for f in /usr/sbin/wisp /etc/wisp/wisp.json /usr/lib/systemd/system/wisp.service /var/lib/wisp /var/log/wisp; do
	[ ! -e "$ROOT$f" ] || fail "$f is left after purge"
done
in_root getent passwd wisp >/dev/null || fail "purge removed the wisp user (Debian leaves system users)"

step "done"
