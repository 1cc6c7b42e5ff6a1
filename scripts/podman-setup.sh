#!/usr/bin/env bash
# Prepares this machine to run PSS pods on real Podman, idempotently:
#
#   1. installs podman, runc and busybox-static (Debian packages) when missing;
#   2. writes the containers.conf these machines need to $PSS_CONTAINERS_CONF
#      (default /etc/pss/containers.conf): crun fails under hybrid cgroups and the default
#      ulimits fail (setrlimit RLIMIT_NOFILE), so: runc, no default ulimits, cgroupfs, and the
#      file events logger when journald is not running;
#   3. builds localhost/pss-demo:latest from busybox-static (no registry is reachable): busybox
#      httpd serving /www, where GET / runs /www/cgi-bin/index.cgi and answers
#      "<h1>hello from <hostname></h1>"; the hostname of a container in a Podman pod is the
#      pod's name, so the page names the PSS pod. /pss-demo.txt is static text;
#   4. makes sure Podman's infra (pause) image exists (`podman pod create` builds it locally);
#   5. starts `podman system service --time=0` on $PSS_PODMAN_SOCK (default
#      /run/pss/podman.sock) unless the socket already answers /_ping, logging to
#      <socket dir>/podman-service.log, and waits until it answers.
#
# Usage:  scripts/podman-setup.sh            (as root)
#         eval "$(scripts/podman-setup.sh | tail -n 2)"
# The last two lines printed are `CONTAINERS_CONF=<path>` and `PSS_PODMAN_SOCK=<path>`,
# so callers can eval or parse them. Concurrent runs are serialised with flock.
set -euo pipefail

# Bump when the demo image's content changes: the image is re-imported when its label differs.
DEMO_VERSION=2
DEMO_IMAGE=localhost/pss-demo:latest
CONF=${PSS_CONTAINERS_CONF:-/etc/pss/containers.conf}
SOCK=${PSS_PODMAN_SOCK:-/run/pss/podman.sock}
SOCK_DIR=$(dirname "$SOCK")

log() { echo "podman-setup: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (rootful Podman is what the PSS demo uses)"

mkdir -p "$SOCK_DIR" "$(dirname "$CONF")"
exec 9>"$SOCK_DIR/setup.lock"
flock 9

# 1. packages
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2
    apt-get install -y -q "${missing[@]}" >&2
fi

# 2. containers.conf
if [ -S /run/systemd/journal/socket ]; then events_logger=journald; else events_logger=file; fi
conf_text="# Written by scripts/podman-setup.sh (PSS). crun fails with hybrid cgroups here and the
# default ulimits fail (setrlimit RLIMIT_NOFILE: Operation not permitted).
[containers]
default_ulimits = []

[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"$events_logger\"
"
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$(printf '%s' "$conf_text")" ]; then
    printf '%s' "$conf_text" >"$CONF"
    log "wrote $CONF"
fi
export CONTAINERS_CONF=$CONF

# 3. the demo image
have_version=$(podman image inspect --format '{{ index .Labels "pss.demo-version" }}' "$DEMO_IMAGE" 2>/dev/null || true)
if [ "$have_version" != "$DEMO_VERSION" ]; then
    log "building $DEMO_IMAGE (version $DEMO_VERSION)"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    root=$work/rootfs
    mkdir -p "$root/bin" "$root/www/cgi-bin" "$root/tmp" "$root/etc"
    cp /bin/busybox "$root/bin/busybox"
    for applet in sh ash httpd echo sleep cat hostname ls ps kill env date wget nc true false printf; do
        ln -sf busybox "$root/bin/$applet"
    done
    cat >"$root/www/cgi-bin/index.cgi" <<'CGI'
#!/bin/sh
# GET / (no index.html, so busybox httpd runs this): the page names the pod.
echo "Content-Type: text/html"
echo
echo "<h1>hello from $(hostname)</h1>"
CGI
    chmod 755 "$root/www/cgi-bin/index.cgi"
    echo "pss-demo" >"$root/www/pss-demo.txt"
    echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
    echo "root:x:0:" >"$root/etc/group"
    tar -C "$root" -cf "$work/rootfs.tar" .
    podman import -q \
        --change 'CMD ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]' \
        --change "LABEL pss.demo-version=$DEMO_VERSION" \
        "$work/rootfs.tar" "$DEMO_IMAGE" >/dev/null
    log "built $DEMO_IMAGE"
fi

# 4. the infra (pause) image: `podman pod create` builds it locally on first use.
if ! podman image exists "localhost/podman-pause:$(podman version --format '{{.Client.Version}}')-0" 2>/dev/null; then
    probe=pss-setup-probe-$$
    podman pod create --name "$probe" >/dev/null
    podman pod rm -f "$probe" >/dev/null
    log "built the infra image"
fi

# 5. the API service
ping() { curl -sf --max-time 2 --unix-socket "$SOCK" http://d/_ping 2>/dev/null | grep -q OK; }
if ! ping; then
    rm -f "$SOCK"
    log "starting podman system service on $SOCK (log: $SOCK_DIR/podman-service.log)"
    CONTAINERS_CONF=$CONF setsid nohup podman system service --time=0 "unix://$SOCK" \
        >>"$SOCK_DIR/podman-service.log" 2>&1 </dev/null 9>&- &
    # Who started it can stop it (scripts/demo.sh down does).
    echo $! > "$SOCK_DIR/podman-service.pid"
    for _ in $(seq 1 100); do
        ping && break
        sleep 0.1
    done
    ping || die "podman system service did not answer on $SOCK; see $SOCK_DIR/podman-service.log"
fi

echo "CONTAINERS_CONF=$CONF"
echo "PSS_PODMAN_SOCK=$SOCK"
