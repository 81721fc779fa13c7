#!/bin/sh
# Write deploy/nats/users.conf: the worker and one user per gateway, bcrypt-hashed.
#
#   deploy/nats/make-users.sh GATEWAY_PASSWORDS [WORKER_PASSWORD_FILE] > deploy/nats/users.conf
#
# GATEWAY_PASSWORDS: one '<gateway id>:<password>' line per gateway (what
# `homemonitor simulate --write-passwords` writes). WORKER_PASSWORD_FILE defaults to
# deploy/secrets/mqtt_password (deploy/make-secrets.sh). Hashes with htpasswd (apache2-utils)
# or Python's crypt module. Then: docker compose kill -s SIGHUP nats  (reload, sessions kept).
set -eu
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
gateways=${1:?usage: make-users.sh GATEWAY_PASSWORDS [WORKER_PASSWORD_FILE]}
worker_file=${2:-"$here/../secrets/mqtt_password"}

hash() {
    if command -v htpasswd >/dev/null 2>&1; then
        htpasswd -bnBC 12 "" "$1" | tr -d ':\n'
    else
        python3 -W ignore -c 'import crypt, sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH)), end="")' "$1"
    fi
}

echo "# Made by deploy/nats/make-users.sh; see users.conf.example. Do not commit."
echo "authorization {"
echo "  users = ["
printf '    {user: homemonitor.worker, password: "%s", permissions: {publish: {deny: ">"}, subscribe: {allow: ["homemonitor.v1.part.*.gw.*.readings", "homemonitor.v1.part.*.gw.*.readings.>", "$MQTT.sub.>"]}}}\n' \
    "$(hash "$(cat "$worker_file")")"
while IFS=: read -r id password; do
    [ -n "$id" ] || continue
    case "$id" in
        *[!A-Za-z0-9_-]*) echo "make-users: '$id' is not a gateway id" >&2; exit 1 ;;
    esac
    printf '    {user: %s, password: "%s", permissions: {publish: {allow: ["homemonitor.v1.part.*.gw.%s.readings", "homemonitor.v1.part.*.gw.%s.readings.>"]}, subscribe: {deny: ">"}}}\n' \
        "$id" "$(hash "$password")" "$id" "$id"
done < "$gateways"
echo "  ]"
echo "}"
