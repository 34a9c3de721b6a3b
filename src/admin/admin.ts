import type { Server } from 'node:http';
import type { SocketAddress } from '../config/model.js';
import { registry } from '../observe/metrics.js';
import type { ClusterState } from '../upstream/cluster-manager.js';
import { json, type Route, serveRoutes, text } from './http.js';

export type ServerState = 'PRE_INITIALIZING' | 'LIVE' | 'DRAINING';

/** What the admin endpoints show and control; the CLI wires it to the running parts. */
export interface AdminView {
  state(): ServerState;
  healthFailed: boolean;
  configDump(): object;
  clusters(): Iterable<ClusterState>;
  listeners(): { name: string; address: string }[];
  serverInfo(): object;
  quit(): void;
}

const socketAddress = (address: string, port: number) => ({ socket_address: { address, port_value: port } });

function clustersText(states: Iterable<ClusterState>): string {
  const lines: string[] = [];
  for (const s of states) {
    const n = s.cluster.name;
    for (const h of s.hosts) {
      const p = `${n}::${h.key}`;
      lines.push(`${p}::rq_active::${h.active}`, `${p}::weight::${h.weight}`, `${p}::priority::${h.priority}`, `${p}::health_flags::${h.healthy ? 'healthy' : '/failed_eds_health'}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

function clustersJson(states: Iterable<ClusterState>): object {
  return {
    cluster_statuses: [...states].map((s) => ({
      name: s.cluster.name,
      host_statuses: s.hosts.map((h) => ({
        address: socketAddress(h.address, h.port),
        stats: [{ name: 'rq_active', value: String(h.active) }],
        health_status: { eds_health_status: h.healthy ? 'HEALTHY' : 'UNHEALTHY' },
        weight: h.weight,
        priority: h.priority,
      })),
    })),
  };
}

const readyReply = (ok: boolean, state: string) => text(`${state}\n`, ok ? 200 : 503);

const prometheus: Route = { method: 'GET', handle: async () => ({ status: 200, body: await registry.metrics(), type: registry.contentType }) };

/** Envoy's admin paths, on 127.0.0.1 only: anyone who reaches it can stop the sidecar. */
export function startAdmin(addr: SocketAddress, view: AdminView): Promise<Server> {
  return serveRoutes(addr, {
    '/ready': { method: 'GET', handle: () => readyReply(view.state() === 'LIVE', view.state()) },
    '/server_info': { method: 'GET', handle: () => json(view.serverInfo()) },
    '/config_dump': { method: 'GET', handle: () => json(view.configDump()) },
    '/clusters': { method: 'GET', handle: (_req, url) => (url.searchParams.get('format') === 'json' ? json(clustersJson(view.clusters())) : text(clustersText(view.clusters()))) },
    '/listeners': {
      method: 'GET',
      handle: (_req, url) => {
        const ls = view.listeners();
        if (url.searchParams.get('format') !== 'json') return text(`${ls.map((l) => `${l.name}::${l.address}`).join('\n')}\n`);
        return json({ listener_statuses: ls.map((l) => ({ name: l.name, local_address: { socket_address: { address: l.address } } })) });
      },
    },
    '/stats/prometheus': prometheus,
    '/healthcheck/fail': { method: 'POST', handle: () => ((view.healthFailed = true), text('OK\n')) },
    '/healthcheck/ok': { method: 'POST', handle: () => ((view.healthFailed = false), text('OK\n')) },
    '/quitquitquit': { method: 'POST', handle: () => (setImmediate(() => view.quit()), text('OK\n')) },
  });
}

/** Istio's readiness port: ready only when LIVE and not failed by /healthcheck/fail. */
export function startHealth(addr: SocketAddress, view: AdminView): Promise<Server> {
  return serveRoutes(addr, {
    '/healthz/ready': {
      method: 'GET',
      handle: () => {
        const state = view.state();
        if (state === 'LIVE' && view.healthFailed) return text('health check failed\n', 503);
        return readyReply(state === 'LIVE', state);
      },
    },
  });
}

export const startPrometheus = (addr: SocketAddress): Promise<Server> => serveRoutes(addr, { '/stats/prometheus': prometheus });
