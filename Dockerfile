# xsidecar: a drop-in istio-proxy image. It replaces the whole istio-proxy container (Envoy and pilot-agent)
# and serves as its own init container (`istio-iptables …`), so it carries iptables, ip6tables and ip.
# Build: `npm run image` (docker when a daemon answers, else buildah). NODE_IMAGE may name another Node ≥ 24
# on Debian bookworm (the CI test builds a local stand-in: image/local-base.sh).
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# No install scripts: koffi ships prebuilt binaries, and a test-only dependency would need a C toolchain.
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY protocols ./protocols
COPY scripts/bundle.mjs ./scripts/
RUN npx tsc -p tsconfig.build.json \
  && node scripts/bundle.mjs \
  && npm prune --omit=dev --no-audit --no-fund \
  && keep="$(node -p 'process.platform + "_" + process.arch')" \
  && find node_modules/koffi/build/koffi -mindepth 1 -maxdepth 1 ! -name "$keep" -exec rm -rf {} + \
  && rm -rf node_modules/koffi/src node_modules/koffi/vendor node_modules/koffi/doc \
  && find node_modules \( -name '*.md' -o -name '*.map' -o -name '*.ts' ! -name '*.d.ts' \) -type f -delete

# The runtime's files, gathered for a scratch image: node, iptables, ip and the libraries they load.
FROM ${NODE_IMAGE} AS files
RUN if ! command -v iptables >/dev/null || ! command -v ip >/dev/null; then \
      apt-get update && apt-get install -y --no-install-recommends iptables iproute2 && rm -rf /var/lib/apt/lists/*; \
    fi
COPY image/rootfs.sh /usr/local/bin/xsidecar-rootfs
RUN sh /usr/local/bin/xsidecar-rootfs /rootfs

FROM scratch
COPY --from=files /rootfs /
COPY --from=build /src/package.json /app/package.json
COPY --from=build /src/node_modules /app/node_modules
COPY --from=build /src/dist/bundle /app/dist/bundle
COPY proto /app/proto
COPY image/pilot-agent /usr/local/bin/pilot-agent
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Istio's template mounts a read-only root: the sidecar writes nothing outside its volumes.
USER 1337:1337
EXPOSE 15001 15006 15020 15021 15090
ENTRYPOINT ["/usr/local/bin/node", "/app/dist/bundle/main.js"]
CMD ["run"]
