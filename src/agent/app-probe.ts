/**
 * Kubernetes probes the injector rewrote to the agent (`/app-health/<container>/livez|readyz|startupz` on
 * 15020), described by ISTIO_KUBE_APP_PROBERS: path -> {httpGet | tcpSocket | grpc, timeoutSeconds}. We run
 * the app's original probe from inside the pod and answer with its outcome, as pilot-agent does, so probes
 * keep working when mTLS or capture would otherwise stand between the kubelet and the app.
 */
import { connect } from 'node:net';
import { ConfigError } from '../config/reader.js';
import { http, https as httpsModule } from '../sys/builtins.js';

export interface AppProbe {
  readonly httpGet?: { path?: string; port: number; host?: string; scheme?: string; httpHeaders?: { name: string; value: string }[] };
  readonly tcpSocket?: { port: number; host?: string };
  readonly grpc?: { port: number; service?: string };
  readonly timeoutSeconds?: number;
}

export type AppProbers = ReadonlyMap<string, AppProbe>;

const portOf = (v: unknown, at: string): number => {
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 65535) throw new ConfigError(at, `expected a port number, got ${JSON.stringify(v)}`);
  return n;
};

export function parseAppProbers(text: string | undefined): AppProbers {
  const out = new Map<string, AppProbe>();
  if (!text || text.trim() === '') return out;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError('ISTIO_KUBE_APP_PROBERS', `not valid JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ConfigError('ISTIO_KUBE_APP_PROBERS', 'expected an object of path: probe');
  for (const [path, p] of Object.entries(raw as Record<string, Record<string, unknown>>)) {
    const at = `ISTIO_KUBE_APP_PROBERS["${path}"]`;
    if (typeof p !== 'object' || p === null) throw new ConfigError(at, 'expected a probe object');
    const h = p.httpGet as Record<string, unknown> | undefined;
    const t = p.tcpSocket as Record<string, unknown> | undefined;
    const g = p.grpc as Record<string, unknown> | undefined;
    const probe: AppProbe = {
      ...(h ? { httpGet: { ...(h as object), port: portOf(h.port, `${at}.httpGet.port`) } } : {}),
      ...(t ? { tcpSocket: { ...(t as object), port: portOf(t.port, `${at}.tcpSocket.port`) } } : {}),
      ...(g ? { grpc: { ...(g as object), port: portOf(g.port, `${at}.grpc.port`) } } : {}),
      ...(typeof p.timeoutSeconds === 'number' ? { timeoutSeconds: p.timeoutSeconds } : {}),
    };
    if (!probe.httpGet && !probe.tcpSocket && !probe.grpc) throw new ConfigError(at, 'expected httpGet, tcpSocket or grpc');
    out.set(path.startsWith('/') ? path : `/${path}`, probe);
  }
  return out;
}

export interface ProbeResult {
  readonly status: number;
  readonly body: string;
}

/** Runs one probe against the app at `podIp` (the app may listen on the pod IP only). */
export function runAppProbe(probe: AppProbe, podIp: string, headers: Record<string, string> = {}): Promise<ProbeResult> {
  const timeoutMs = Math.max(1, probe.timeoutSeconds ?? 1) * 1000;
  return new Promise((resolve) => {
    if (probe.httpGet) {
      const g = probe.httpGet;
      const https = (g.scheme ?? 'HTTP').toUpperCase() === 'HTTPS';
      const hdrs: Record<string, string> = { 'user-agent': 'kube-probe/xsidecar', ...headers };
      for (const h of g.httpHeaders ?? []) hdrs[h.name] = h.value;
      const req = (https ? httpsModule().request : http.request)({ host: g.host || podIp, port: g.port, path: g.path || '/', method: 'GET', headers: hdrs, timeout: timeoutMs, rejectUnauthorized: false }, (res) => {
        res.resume();
        // Kubernetes counts 200..399 as success; pass the app's code through.
        res.on('end', () => resolve({ status: res.statusCode ?? 500, body: '' }));
      });
      req.on('timeout', () => req.destroy(new Error(`timed out after ${timeoutMs} ms`)));
      req.on('error', (e) => resolve({ status: 500, body: `probe failed: ${e.message}\n` }));
      req.end();
      return;
    }
    // tcpSocket; grpc probes are checked as a TCP connect (no gRPC health client here): weaker, said in the README.
    const port = probe.tcpSocket?.port ?? probe.grpc!.port;
    const sock = connect({ host: probe.tcpSocket?.host || podIp, port, timeout: timeoutMs });
    sock.once('connect', () => (sock.destroy(), resolve({ status: 200, body: 'OK\n' })));
    sock.once('timeout', () => (sock.destroy(), resolve({ status: 500, body: `probe failed: connect to ${port} timed out\n` })));
    sock.once('error', (e) => resolve({ status: 500, body: `probe failed: ${e.message}\n` }));
  });
}
