#!/bin/sh
# Run inside the Dockerfile's `files` stage: gathers the runtime's files into $1 for a FROM scratch image —
# node, iptables/ip6tables (nft and legacy backends, with their extension modules), ip, the shared libraries
# ldd lists for all of them, and the passwd/group entries of the istio-proxy user (UID/GID 1337).
set -eu
out=$1
# The real directory (/lib is a symlink to usr/lib on Debian): where iptables looks for its extensions.
arch_lib=$(readlink -f "$(dirname "$(ldd "$(command -v iptables)" | awk '/libc\.so/ {print $3}')")")
xtables=$arch_lib/xtables

mkdir -p "$out/usr/local/bin" "$out/usr/sbin" "$out/etc" "$out/tmp" "$out/var/lib/istio/data" "$out/etc/istio/proxy"
chmod 1777 "$out/tmp"
cp "$(command -v node)" "$out/usr/local/bin/node"
cp "$(readlink -f "$(command -v xtables-nft-multi)")" "$out/usr/sbin/xtables-nft-multi"
cp "$(readlink -f "$(command -v xtables-legacy-multi)")" "$out/usr/sbin/xtables-legacy-multi"
cp "$(readlink -f "$(command -v ip)")" "$out/usr/sbin/ip"
# Debian's default backend (nft) under the plain names; the legacy one under its -legacy names.
for fam in iptables ip6tables; do
  for suffix in '' -save -restore; do
    ln -s xtables-nft-multi "$out/usr/sbin/$fam$suffix"
    ln -s xtables-nft-multi "$out/usr/sbin/$fam-nft$suffix"
    ln -s xtables-legacy-multi "$out/usr/sbin/$fam-legacy$suffix"
  done
done
mkdir -p "$out$xtables"
cp "$xtables"/*.so "$out$xtables/"

# Every shared library the binaries and the iptables extensions load, at the path the loader looks for it.
for f in "$out/usr/local/bin/node" "$out/usr/sbin/xtables-nft-multi" "$out/usr/sbin/xtables-legacy-multi" "$out/usr/sbin/ip" "$xtables"/*.so; do
  ldd "$f" | awk '/=> \// {print $3} /^[ \t]*\/[^ ]+ \(/ {print $1}'
done | sort -u | while read -r lib; do
  mkdir -p "$out$(dirname "$lib")"
  cp -L "$lib" "$out$lib"
done

printf 'root:x:0:0:root:/root:/sbin/nologin\nistio-proxy:x:1337:1337:istio-proxy:/nonexistent:/sbin/nologin\n' >"$out/etc/passwd"
printf 'root:x:0:\nistio-proxy:x:1337:\n' >"$out/etc/group"
printf 'hosts: files dns\n' >"$out/etc/nsswitch.conf"
chown -R 1337:1337 "$out/var/lib/istio" "$out/etc/istio"
