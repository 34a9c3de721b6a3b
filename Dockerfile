# xsidecar: replaces the whole istio-proxy container (Envoy + pilot-agent); the same image serves as the
# init container (`xsidecar iptables`), so it carries iptables and iproute2.
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY protocols ./protocols
COPY proto ./proto
COPY test ./test
COPY bench ./bench
RUN npx tsc -p tsconfig.json && npm prune --omit=dev

FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends iptables iproute2 \
  && rm -rf /var/lib/apt/lists/* \
  && groupadd -g 1337 istio-proxy && useradd -u 1337 -g 1337 -M -s /usr/sbin/nologin istio-proxy
WORKDIR /app
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist/src ./dist/src
COPY --from=build /src/dist/protocols ./dist/protocols
COPY proto ./proto
USER 1337:1337
EXPOSE 15001 15006 15000 15021 15090 15053
ENTRYPOINT ["node", "/app/dist/src/cli/main.js"]
CMD ["run"]
