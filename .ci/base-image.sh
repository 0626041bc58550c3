#!/usr/bin/env bash
# Build (once) the Debian base image the containers backend builds its app and MariaDB images on, for machines
# with a container engine but no image registry: debootstrap minbase + python3 and the shared libraries the
# host-built wheels need (uWSGI: libpython, libxml2; mysqlclient: libmariadb3).
#   bash .ci/base-image.sh IMAGE     (e.g. localhost/wsgi502-ctr-base:bookworm)
# The rootfs tarball is cached in $WSGI502_CACHE (default /var/cache/wsgi502), which survives between CI runs on
# the same machine; the mirror is the one apt uses here, read at run time.
set -euo pipefail
image=${1:?usage: base-image.sh IMAGE}
engine=${CONTAINER_CLI:-podman}
log() { printf '[base-image] %s\n' "$*" >&2; }
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
"$engine" import "$tarball" "$image" >/dev/null
