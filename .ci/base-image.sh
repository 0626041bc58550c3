#!/usr/bin/env bash
# Build (once) the Debian base image the containers backend builds its app and MariaDB images on, for machines
# with a container engine but no image registry: debootstrap minbase + python3 and the shared libraries the
# host-built wheels need (uWSGI: libpython, libxml2; mysqlclient: libmariadb3).
#   bash .ci/base-image.sh IMAGE     (e.g. localhost/wsgi502-ctr-base:bookworm)
# The rootfs tarball is cached in $WSGI502_CACHE (default /var/cache/wsgi502), which survives between CI runs on
# the same machine; the mirror is the one apt uses here, read at run time.
#   bash .ci/base-image.sh --from-distro IMAGE PYTHON
# With a registry (GitHub's runners): FROM the host's own distribution (/etc/os-release) plus python3 and
# libpythonX.Y of PYTHON's version, so the wheels built on the host run in it.
set -euo pipefail
log() { printf '[base-image] %s\n' "$*" >&2; }
engine=${CONTAINER_CLI:-$(command -v podman >/dev/null && echo podman || echo docker)}
if [ "${1:-}" = --from-distro ]; then
  image=${2:?usage: base-image.sh --from-distro IMAGE PYTHON}
  pyver=$("${3:?usage: base-image.sh --from-distro IMAGE PYTHON}" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  . /etc/os-release
  log "building $image FROM $ID:$VERSION_ID with python3 and libpython$pyver"
  printf 'FROM %s:%s\nRUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \\\n    --no-install-recommends python3 libpython%s ca-certificates && rm -rf /var/lib/apt/lists/*\n' \
    "$ID" "$VERSION_ID" "$pyver" | "$engine" build -q -t "$image" - >/dev/null
  exit 0
fi
image=${1:?usage: base-image.sh IMAGE}
if "$engine" image inspect "$image" >/dev/null 2>&1; then log "$image exists"; exit 0; fi
cache=${WSGI502_CACHE:-/var/cache/wsgi502}
suite=bookworm
pkgs=python3,libpython3.11,libmariadb3,libxml2,ca-certificates
tarball="$cache/base-$suite-$(echo "$pkgs" | sha256sum | cut -c1-12).tar"
mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [ -n "$mirror" ] || { log "no Debian mirror found in /etc/apt"; exit 1; }
  command -v debootstrap >/dev/null || { log "debootstrap missing: apt-get install debootstrap"; exit 1; }
  rootfs=$(mktemp -d /tmp/wsgi502-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap $suite from $mirror (about a minute)"
  debootstrap --variant=minbase --include="$pkgs" "$suite" "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
fi
log "importing $tarball as $image"
"$engine" import -q "$tarball" "$image" >/dev/null
