#!/bin/sh
# Development certificates for Wisp (never for production): a local CA, a
# server certificate for localhost, client certificates for named devices,
# and deliberately bad certificates for tests. Needs the openssl CLI.
#
# Usage: certs/make-certs.sh [--dir DIR] [--rsa] [--force] [--days N] [COMMAND]
#   (no command)       ca (if missing) + server
#   ca                 development CA: ca.key, ca.crt
#   server [--san L]   server.key/.crt, CN=localhost, SAN DNS:localhost,
#                      IP:127.0.0.1, IP:::1 (+ L, e.g. DNS:broker.lan,IP:10.0.0.5)
#   client NAME        NAME.key/.crt, CN=NAME, signed by the CA (mutual TLS)
#   selfsigned NAME    NAME.key/.crt, CN=NAME, self-signed (must be refused)
#   expired NAME       NAME.key/.crt signed by the CA, valid 2020-01-01..02
#   notyet NAME        NAME.key/.crt signed by the CA, valid from 2099-01-01
# Options (before or after the command):
#   --dir DIR   write into DIR (default: the directory of this script)
#   --rsa       RSA 2048 keys instead of ECDSA P-256 (the default: the cheapest
#               full handshake for Wisp and Mosquitto alike, bench/README.md)
#   --force     replace an existing key (never done otherwise)
#   --days N    validity of new certificates (default 825; CA 3650)
#
# Keys are created mode 0600 and are git-ignored (certs/*.key).
set -eu

die() { echo "make-certs.sh: $*" >&2; exit 1; }

dir=$(cd "$(dirname "$0")" && pwd)
rsa=0
force=0
days=825
san_extra=""
cmd=""
name=""

while [ $# -gt 0 ]; do
	case "$1" in
	--dir) [ $# -ge 2 ] || die "--dir needs a directory"; dir=$2; shift 2 ;;
	--rsa) rsa=1; shift ;;
	--force) force=1; shift ;;
	--days) [ $# -ge 2 ] || die "--days needs a number"; days=$2; shift 2 ;;
	--san) [ $# -ge 2 ] || die "--san needs a list"; san_extra=$2; shift 2 ;;
	-h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	-*) die "unknown option $1 (see --help)" ;;
	*)
		if [ -z "$cmd" ]; then cmd=$1
		elif [ -z "$name" ]; then name=$1
		else die "unexpected argument $1"
		fi
		shift ;;
	esac
done

case "$days" in ''|*[!0-9]*) die "--days: not a number: $days" ;; esac
command -v openssl >/dev/null 2>&1 || die "the openssl command-line tool is required"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

check_name() {
	[ -n "$1" ] || die "$cmd needs a NAME"
	case "$1" in
	ca|server) die "$1 is reserved" ;;
	*[!A-Za-z0-9._-]*|.*) die "NAME may only contain letters, digits, '.', '_' and '-': $1" ;;
	esac
}

# new_key FILE: refuses to replace an existing key unless --force.
new_key() {
	if [ -e "$1" ] && [ "$force" -ne 1 ]; then
		die "$1 exists; not overwriting (use --force to replace it)"
	fi
	rm -f "$1"
	if [ "$rsa" -eq 1 ]; then
		(umask 077; openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null)
	else
		(umask 077; openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
			-pkeyopt ec_param_enc:named_curve -out "$1")
	fi
}

need_ca() {
	[ -f "$dir/ca.key" ] && [ -f "$dir/ca.crt" ] ||
		die "no CA in $dir: run '$0${dir:+ --dir $dir} ca' first"
}

serial() { echo "0x$(openssl rand -hex 16)"; }

# Extension sections; keyUsage fits both ECDSA and RSA key exchange.
cat >"$tmp/ext.cnf" <<'EOF'
[ ca ]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ server ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = ${ENV::WISP_SAN}
[ client ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ client_self ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
[ any ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = unused
EOF
WISP_SAN="DNS:localhost, IP:127.0.0.1, IP:::1"
export WISP_SAN

# sign NAME CN SECTION: CSR for NAME.key, signed by the CA for --days.
sign() {
	openssl req -new -config "$tmp/ext.cnf" -key "$dir/$1.key" -subj "/CN=$2" -out "$tmp/$1.csr"
	openssl x509 -req -in "$tmp/$1.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
		-set_serial "$(serial)" -days "$days" -sha256 \
		-extfile "$tmp/ext.cnf" -extensions "$3" -out "$dir/$1.crt" 2>/dev/null
}

# sign_dated NAME CN START END: as sign, with explicit dates (YYYYMMDDHHMMSSZ),
# which only `openssl ca` can set in OpenSSL 3.0.
sign_dated() {
	openssl req -new -config "$tmp/ext.cnf" -key "$dir/$1.key" -subj "/CN=$2" -out "$tmp/$1.csr"
	mkdir -p "$tmp/db"
	: >"$tmp/db/index.txt"
	cat >"$tmp/ca.cnf" <<EOF
[ ca ]
default_ca = dev
[ dev ]
database = $tmp/db/index.txt
new_certs_dir = $tmp/db
serial = $tmp/db/serial
default_md = sha256
policy = any_policy
unique_subject = no
copy_extensions = none
[ any_policy ]
commonName = supplied
EOF
	openssl ca -batch -notext -config "$tmp/ca.cnf" -cert "$dir/ca.crt" -keyfile "$dir/ca.key" \
		-create_serial -startdate "$3" -enddate "$4" \
		-extfile "$tmp/ext.cnf" -extensions any -in "$tmp/$1.csr" -out "$dir/$1.crt" 2>/dev/null
}

make_ca() {
	new_key "$dir/ca.key"
	openssl req -new -x509 -config "$tmp/ext.cnf" -key "$dir/ca.key" -subj "/CN=Wisp Development CA" \
		-set_serial "$(serial)" -days 3650 -sha256 -extensions ca -out "$dir/ca.crt"
	echo "created $dir/ca.key $dir/ca.crt"
}

make_server() {
	need_ca
	[ -z "$san_extra" ] || WISP_SAN="$WISP_SAN, $san_extra"
	new_key "$dir/server.key"
	sign server localhost server
	echo "created $dir/server.key $dir/server.crt (SAN: $WISP_SAN)"
}

case "$cmd" in
"")
	# The CA is kept even with --force: replacing it would orphan every
	# client certificate. Use `ca --force` for that.
	if [ -f "$dir/ca.key" ] && [ -f "$dir/ca.crt" ]; then
		echo "using existing CA $dir/ca.crt"
	else
		make_ca
	fi
	make_server ;;
ca) make_ca ;;
server) make_server ;;
client)
	check_name "$name"; need_ca
	new_key "$dir/$name.key"
	sign "$name" "$name" client
	echo "created $dir/$name.key $dir/$name.crt (CN=$name)" ;;
selfsigned)
	check_name "$name"
	new_key "$dir/$name.key"
	openssl req -new -x509 -config "$tmp/ext.cnf" -key "$dir/$name.key" -subj "/CN=$name" \
		-set_serial "$(serial)" -days "$days" -sha256 -extensions client_self -out "$dir/$name.crt"
	echo "created $dir/$name.key $dir/$name.crt (self-signed, CN=$name)" ;;
expired)
	check_name "$name"; need_ca
	new_key "$dir/$name.key"
	sign_dated "$name" "$name" 20200101000000Z 20200102000000Z
	echo "created $dir/$name.key $dir/$name.crt (expired 2020-01-02)" ;;
notyet)
	check_name "$name"; need_ca
	new_key "$dir/$name.key"
	sign_dated "$name" "$name" 20990101000000Z 20991231000000Z
	echo "created $dir/$name.key $dir/$name.crt (valid from 2099-01-01)" ;;
*) die "unknown command $cmd (see --help)" ;;
esac
