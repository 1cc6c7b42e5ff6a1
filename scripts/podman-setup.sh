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
# With --rootless USER (the seed's default: "Podman (rootless mode by default)"), steps 1-4
# run as above (root's store is where the demo image is built), then USER gets rootless
# Podman, and root's API service (step 5) is left alone:
#
#   R1. packages uidmap (newuidmap/newgidmap) and slirp4netns (rootless networking);
#   R2. USER is created when missing (`useradd -m`, which adds its sub-ids on Debian) and gets
#       a range in /etc/subuid and /etc/subgid when it has none;
#   R3. /dev/net/tun usable by every user (0666, Debian's default; slirp4netns opens it as
#       USER, and some hosts ship it 0600);
#   R4. USER's runtime directory /run/user/UID (0700, owned by USER; `loginctl enable-linger`
#       when systemd runs, so it outlives logins);
#   R5. ~USER/.config/containers/containers.conf with the same settings as root's (runc, no
#       default ulimits, cgroupfs, file events logger: no systemd user session needed);
#   R6. the demo image copied into USER's store (podman save | podman load) when its
#       pss.demo-version label differs, and USER's infra image;
#   R7. USER's own `podman system service --time=0` on /run/user/UID/podman/podman.sock (the
#       path the agent finds on its own as USER: $XDG_RUNTIME_DIR/podman/podman.sock), logging
#       to /run/user/UID/podman/podman-service.log, pid in podman-service.pid.
#
# Usage:  scripts/podman-setup.sh                        (as root)
#         scripts/podman-setup.sh --rootless pss-rootless (as root)
#         eval "$(scripts/podman-setup.sh | tail -n 2)"
# The last two lines printed are `CONTAINERS_CONF=<path>` and `PSS_PODMAN_SOCK=<path>` (with
# --rootless: USER's, preceded by `PSS_ROOTLESS_USER=`, `PSS_ROOTLESS_UID=` and
# `XDG_RUNTIME_DIR=`), so callers can eval or parse them. Concurrent runs are serialised with
# flock.
set -euo pipefail

# Bump when the demo image's content changes: the image is re-imported when its label differs.
DEMO_VERSION=3
DEMO_IMAGE=localhost/pss-demo:latest
CONF=${PSS_CONTAINERS_CONF:-/etc/pss/containers.conf}
SOCK=${PSS_PODMAN_SOCK:-/run/pss/podman.sock}
SOCK_DIR=$(dirname "$SOCK")

log() { echo "podman-setup: $*" >&2; }
die() { log "error: $*"; exit 1; }

# Runs a command as the rootless user, in a directory it can read, with its runtime directory.
as_user() {
    (cd / && runuser -u "$R_USER" -- env -u CONTAINERS_CONF -u DOCKER_HOST -u CONTAINER_HOST HOME="$R_HOME" XDG_RUNTIME_DIR="$R_RUNDIR" \
        ${R_DBUS:+DBUS_SESSION_BUS_ADDRESS=$R_DBUS} "$@")
}

# The first free start of a 65536-id range in /etc/subuid or /etc/subgid (after every range).
next_subid_start() {
    awk -F: 'BEGIN { end = 100000 } NF == 3 && $2 + $3 > end { end = $2 + $3 } END { print end }' "$1"
}

# R1-R7 of the header, for user $1.
rootless_setup() {
    R_USER=$1
    # R2. the user and its sub-ids
    if ! id -u "$R_USER" >/dev/null 2>&1; then
        useradd -m -s /bin/bash "$R_USER"
        log "created user $R_USER"
    fi
    local subids=()
    touch /etc/subuid /etc/subgid
    grep -q "^$R_USER:" /etc/subuid 2>/dev/null || subids+=(--add-subuids "$(next_subid_start /etc/subuid)-$(( $(next_subid_start /etc/subuid) + 65535 ))")
    grep -q "^$R_USER:" /etc/subgid 2>/dev/null || subids+=(--add-subgids "$(next_subid_start /etc/subgid)-$(( $(next_subid_start /etc/subgid) + 65535 ))")
    if [ ${#subids[@]} -gt 0 ]; then
        usermod "${subids[@]}" "$R_USER"
        log "gave $R_USER sub-ids: ${subids[*]}"
    fi
    R_UID=$(id -u "$R_USER")
    R_GID=$(id -g "$R_USER")
    R_HOME=$(getent passwd "$R_USER" | cut -d: -f6)
    R_RUNDIR=/run/user/$R_UID
    [ -d "$R_HOME" ] || die "$R_USER has no home directory ($R_HOME): rootless storage lives there"

    # R3. /dev/net/tun for slirp4netns
    if [ ! -e /dev/net/tun ]; then
        mkdir -p /dev/net
        mknod -m 0666 /dev/net/tun c 10 200
        log "created /dev/net/tun"
    elif [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
        chmod 0666 /dev/net/tun
        log "made /dev/net/tun usable by every user (0666, Debian's default): slirp4netns opens it"
    fi

    # R4. the runtime directory; with systemd, lingering keeps it (and the user's manager)
    if [ -d /run/systemd/system ] && command -v loginctl >/dev/null; then
        if [ "$(loginctl show-user "$R_USER" -p Linger --value 2>/dev/null)" != yes ]; then
            loginctl enable-linger "$R_USER"
            log "enabled lingering for $R_USER"
        fi
        for _ in $(seq 1 50); do [ -d "$R_RUNDIR" ] && break; sleep 0.1; done
        [ -S "$R_RUNDIR/bus" ] && R_DBUS=unix:path=$R_RUNDIR/bus
    fi
    if [ ! -d "$R_RUNDIR" ]; then
        mkdir -p "$R_RUNDIR"
        log "created $R_RUNDIR"
    fi
    chown "$R_UID:$R_GID" "$R_RUNDIR"
    chmod 0700 "$R_RUNDIR"

    # R5. the user's containers.conf (the user's own podman CLI reads it too)
    local r_conf=$R_HOME/.config/containers/containers.conf manager=cgroupfs
    # A systemd user session can delegate cgroup controllers (cgroup v2): let it manage them.
    [ -n "${R_DBUS:-}" ] && manager=systemd
    local r_text="# Written by scripts/podman-setup.sh --rootless (PSS): as root's /etc/pss/containers.conf.
[containers]
default_ulimits = []

[engine]
runtime = \"runc\"
cgroup_manager = \"$manager\"
events_logger = \"file\"
"
    if [ ! -f "$r_conf" ] || [ "$(cat "$r_conf")" != "$(printf '%s' "$r_text")" ]; then
        as_user mkdir -p "$(dirname "$r_conf")"
        printf '%s' "$r_text" | as_user tee "$r_conf" >/dev/null
        log "wrote $r_conf"
    fi

    # R6. the demo image and the infra image, in the user's store
    local r_version
    r_version=$(as_user podman image inspect --format '{{ index .Labels "pss.demo-version" }}' "$DEMO_IMAGE" 2>/dev/null || true)
    if [ "$r_version" != "$DEMO_VERSION" ]; then
        log "copying $DEMO_IMAGE into $R_USER's store"
        podman save "$DEMO_IMAGE" 2>/dev/null | as_user podman load -q >/dev/null
        log "copied $DEMO_IMAGE (version $DEMO_VERSION) into $R_USER's store"
    fi
    if ! as_user podman image exists "localhost/podman-pause:$(podman version --format '{{.Client.Version}}')-0" 2>/dev/null; then
        local probe=pss-setup-probe-$$
        as_user podman pod create --name "$probe" >/dev/null
        as_user podman pod rm -f "$probe" >/dev/null
        log "built $R_USER's infra image"
    fi

    # R7. the user's API service, where the agent looks for it
    local r_sock=$R_RUNDIR/podman/podman.sock
    r_ping() { curl -sf --max-time 2 --unix-socket "$r_sock" http://d/_ping 2>/dev/null | grep -q OK; }
    if ! r_ping; then
        as_user mkdir -p "$R_RUNDIR/podman"
        rm -f "$r_sock"
        log "starting $R_USER's podman system service on $r_sock (log: $R_RUNDIR/podman/podman-service.log)"
        # setsid: its own session, so it outlives this script; the log is the user's file.
        as_user sh -c 'exec setsid nohup podman system service --time=0 "unix://$1" >>"$2" 2>&1 </dev/null & echo $! >"$3"' \
            sh "$r_sock" "$R_RUNDIR/podman/podman-service.log" "$R_RUNDIR/podman/podman-service.pid" 9>&-
        for _ in $(seq 1 100); do
            r_ping && break
            sleep 0.1
        done
        r_ping || die "$R_USER's podman system service did not answer on $r_sock; see $R_RUNDIR/podman/podman-service.log"
    fi

    echo "PSS_ROOTLESS_USER=$R_USER"
    echo "PSS_ROOTLESS_UID=$R_UID"
    echo "XDG_RUNTIME_DIR=$R_RUNDIR"
    echo "CONTAINERS_CONF=$r_conf"
    echo "PSS_PODMAN_SOCK=$r_sock"
}

ROOTLESS_USER=
while [ $# -gt 0 ]; do
    case $1 in
        --rootless) [ $# -ge 2 ] || die "--rootless needs a user name"; ROOTLESS_USER=$2; shift 2 ;;
        --rootless=*) ROOTLESS_USER=${1#--rootless=}; shift ;;
        *) die "unknown argument: $1 (usage: $0 [--rootless USER])" ;;
    esac
done

[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages, and root's store holds the demo image)"

mkdir -p "$SOCK_DIR" "$(dirname "$CONF")"
exec 9>"$SOCK_DIR/setup.lock"
flock 9

# 1. packages
missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
[ -x /bin/busybox ] || missing+=(busybox-static)
command -v curl >/dev/null || missing+=(curl)
if [ -n "$ROOTLESS_USER" ]; then
    command -v newuidmap >/dev/null || missing+=(uidmap)
    command -v slirp4netns >/dev/null || missing+=(slirp4netns)
fi
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
# GET / (no index.html, so busybox httpd runs this): the page names the pod. One access-log
# line per request goes to stderr, i.e. the container's log (`pssctl logs`).
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) ${REMOTE_ADDR:-?} ${REQUEST_METHOD:-GET} ${REQUEST_URI:-/} 200" >&2
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

if [ -n "$ROOTLESS_USER" ]; then
    rootless_setup "$ROOTLESS_USER"
    exit 0
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
