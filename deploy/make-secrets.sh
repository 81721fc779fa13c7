#!/bin/sh
# Random passwords for the compose stack, as Docker secrets: deploy/secrets/<name>.
# An existing file is kept (re-running never changes a password the database already has).
# The directory is 0700 (only you on the host); the files are 0644 because compose mounts a
# file secret with its host mode and owner, and the service runs as uid 10001 inside.
set -eu
dir="$(dirname "$0")/secrets"
mkdir -p "$dir"
chmod 700 "$dir"
for name in postgres_password mqtt_password grafana_admin_password; do
    file="$dir/$name"
    if [ -s "$file" ]; then
        echo "kept    $file"
        continue
    fi
    (umask 022 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$file")
    echo "created $file"
done
echo "next: mosquitto_passwd -c deploy/mosquitto/passwd homemonitor.worker  (password: $dir/mqtt_password)"
