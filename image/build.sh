#!/usr/bin/env bash
# `npm run image [-- TAG [extra build flags…]]`: builds the Dockerfile with docker when a daemon answers,
# else with buildah (daemonless: vfs storage, chroot isolation). BUILDAH_FLAGS replaces the global buildah
# flags (e.g. --root DIR --runroot DIR); NODE_IMAGE picks another base (see image/local-base.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-xsidecar:latest}
shift || true
args=(--tag "$tag" --file Dockerfile)
[[ -n ${NODE_IMAGE:-} ]] && args+=(--build-arg "NODE_IMAGE=$NODE_IMAGE")
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  exec docker build "${args[@]}" "$@" .
fi
if ! command -v buildah >/dev/null 2>&1; then
  echo "npm run image: no docker daemon and no buildah; install one (Debian: apt-get install buildah)" >&2
  exit 1
fi
read -r -a flags <<<"${BUILDAH_FLAGS:---storage-driver vfs}"
exec buildah "${flags[@]}" build --isolation chroot --layers=false "${args[@]}" "$@" .
