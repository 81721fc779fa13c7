#!/bin/sh
# Make a DEVELOPMENT certificate authority and a server certificate for Mosquitto's TLS
# listener (8883). Not for production: there, use your organisation's CA.
#
#   deploy/mosquitto/make-dev-certs.sh [OUTDIR] [NAME ...]
#
# OUTDIR defaults to deploy/mosquitto/certs (gitignored). NAMEs are extra host names or
# IP addresses gateways use to reach the broker; "mosquitto", "localhost" and 127.0.0.1
# are always included. Writes ca.crt, ca.key, server.crt, server.key; an existing CA is
# reused, so certificates already given to gateways stay valid. Gateways need ca.crt only;
# keep ca.key off the broker host.
#
# Mosquitto 2 reads the key after dropping root for its own user (uid 1883 in the
# eclipse-mosquitto image). Run as root, this script hands server.key to that user (mode
# 0600); otherwise it leaves server.key readable by all (0644) and says so: fine for a
# development machine, not for production.
set -eu

here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
out=${1:-"$here/certs"}
[ "$#" -gt 0 ] && shift
command -v openssl >/dev/null 2>&1 || { echo "make-dev-certs: openssl is required" >&2; exit 1; }
mkdir -p "$out"
umask 077

san="DNS:mosquitto,DNS:localhost,IP:127.0.0.1"
for name in "$@"; do
    case "$name" in
        *[!0-9.]*) san="$san,DNS:$name" ;;
        *) san="$san,IP:$name" ;;
    esac
done

if [ ! -f "$out/ca.key" ] || [ ! -f "$out/ca.crt" ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$out/ca.key" -out "$out/ca.crt" -days 825 -sha256 \
        -subj "/O=homemonitor development/CN=homemonitor development CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$out/server.key" -out "$out/server.csr" \
    -subj "/O=homemonitor development/CN=mosquitto" 2>/dev/null
ext="$out/server.ext"
printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=$san" >"$ext"
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -out "$out/server.crt" -days 397 -sha256 -extfile "$ext" 2>/dev/null
rm -f "$out/server.csr" "$ext" "$out/ca.srl"
chmod 0644 "$out/ca.crt" "$out/server.crt"
chmod 0600 "$out/ca.key" "$out/server.key"
broker_uid=${MOSQUITTO_UID:-1883}
if [ "$(id -u)" = 0 ]; then
    chown "$broker_uid:$broker_uid" "$out/server.key"
else
    chmod 0644 "$out/server.key"
    echo "note: $out/server.key is world-readable so that the broker (uid $broker_uid) can" \
        "read it; for production: sudo chown $broker_uid:$broker_uid server.key && sudo chmod 0600 server.key" >&2
fi
echo "wrote $out/ca.crt and $out/server.crt (subjectAltName $san)"
