/**
 * The agent's status port (15020), answering the paths Istio's template, the injector's probe rewrite and
 * Kubernetes use: /healthz/ready (as 15021), /stats/prometheus and /metrics, POST /drain (native sidecars'
 * preStop: start draining, keep running until SIGTERM), POST /quitquitquit (drain and exit), and the
 * rewritten app probes /app-health/<container>/{livez,readyz,startupz}. Drain and quit take requests from
 * the pod itself only, like pilot-agent.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { ServerState } from '../admin/admin.js';
import { registry } from '../observe/metrics.js';
import { http } from '../sys/builtins.js';
import { type AppProbers, runAppProbe } from './app-probe.js';

export interface StatusView {
  state(): ServerState;
  readonly healthFailed: boolean;
  /** Start draining; the process keeps running. */
  drain(): void;
  /** Drain and exit. */
  quit(): void;
}

export interface StatusOptions {
  readonly address: string;
  readonly port: number;
  readonly probers: AppProbers;
  /** Where the app's original probes are sent (the pod IP; 127.0.0.1 outside a pod). */
  readonly podIp: string;
}

const LOCAL = /^(127\.|::1$|::ffff:127\.)/;

function reply(res: ServerResponse, status: number, body: string, type = 'text/plain; charset=utf-8'): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

async function handle(view: StatusView, opts: StatusOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = new URL(req.url ?? '/', 'http://status').pathname;
  const method = req.method ?? 'GET';
  if (path === '/healthz/ready') {
    const s = view.state();
    if (s === 'LIVE' && view.healthFailed) return reply(res, 503, 'health check failed\n');
    return reply(res, s === 'LIVE' ? 200 : 503, `${s}\n`);
  }
  if (path === '/stats/prometheus' || path === '/metrics') return reply(res, 200, await registry.metrics(), registry.contentType);
  if (path === '/drain' || path === '/quitquitquit') {
    if (!LOCAL.test(req.socket.remoteAddress ?? '')) return reply(res, 403, 'Only requests from localhost are allowed\n');
    if (method !== 'POST') return reply(res, 405, 'Method Not Allowed\n');
    reply(res, 200, 'OK');
    setImmediate(() => (path === '/drain' ? view.drain() : view.quit()));
    return;
  }
  if (path.startsWith('/app-health/') || path.startsWith('/app-lifecycle/')) {
    const probe = opts.probers.get(path);
    if (!probe) return reply(res, 400, `app prober config does not exist for ${path}\n`);
    const r = await runAppProbe(probe, opts.podIp);
    return reply(res, r.status, r.body);
  }
  reply(res, 404, `no such status path: ${path}\n`);
}

export function startStatusServer(view: StatusView, opts: StatusOptions): Promise<Server> {
  const server = http.createServer((req, res) => {
    handle(view, opts, req, res).catch((e: Error) => {
      if (!res.headersSent) reply(res, 500, `${e.message}\n`);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.address, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
