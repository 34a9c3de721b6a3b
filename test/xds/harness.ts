/**
 * Shared pieces of the xDS integration tests: the Istio fixture set as a resource file, a bootstrap that
 * points the sidecar at a test ADS server, and drivers for the ADS server and sidecar processes.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { freePort } from '../helpers/sidecar.js';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AnyMessage } from '../../src/xds/any.js';
import { type EngineOptions, XdsEngine } from '../../src/xds/engine.js';
import { fromProto3Json } from '../../src/xds/proto-json.js';
import type { Published } from '../../src/xds/snapshot-builder.js';
import { pino } from 'pino';
import { loadXdsProtos } from '../../src/xds/protos.js';
import { peer, Proc, spawnNode, writeTemp } from '../helpers/netns.js';
import { cliPath, fixture, repoRoot } from '../helpers/paths.js';
import { readMetric } from '../helpers/sidecar.js';

export type Json = Record<string, unknown>;

export const DSB = 'istio/istio-1.18-sidecar-deathstarbench';
/** Names the Istio fixtures use: the EDS cluster the traffic tests add, the fixture's EDS cluster, its RDS route. */
export const ECHO = 'outbound|7000||echo.default.svc.cluster.local';
export const REVIEWS = 'outbound|9080||reviews.default.svc.cluster.local';
export const GEO = 'geo.hotel-res.svc.cluster.local:8083';
export const readFixture = (...parts: string[]): Json => JSON.parse(readFileSync(fixture(...parts), 'utf8')) as Json;

/** Real istiod output: listeners, clusters, endpoints, routes of one sidecar, plus an active virtualInbound and a NameTable. */
export function istioFixtureSet(ports: { outbound: number; inbound: number } = { outbound: 15001, inbound: 15006 }): Json[] {
  const files = [
    'cluster_BlackHoleCluster.json',
    'cluster_PassthroughCluster.json',
    'cluster_InboundPassthroughClusterIpv4.json',
    'cluster_inbound_8083__.json',
    'cluster_outbound_9080_reviews.json',
    'cla_outbound_9080_reviews.json',
    'cla_outbound_8080_alertmanager-main_3eps.json',
    'listener_virtualOutbound.json',
    'listener_0.0.0.0_9080_http.json',
    'listener_10.68.42.69_8083_http_clusterip.json',
    'listener_10.68.54.170_27017_tcp.json',
    'route_9080.json',
    'route_geo.hotel-res.svc.cluster.local_8083.json',
  ];
  const set = files.map((f) => readFixture(DSB, f));
  // The deathstarbench sidecar's own virtualInbound is the NACKED one; take an accepted one from istio's testdata.
  set.push(readFixture('istio/istio-repo-authz-configdump/listener_virtualInbound.json'));
  const { _provenance, ...nametable } = readFixture('istio/nds/nametable_headless_from_istio_test.json');
  set.push(nametable);
  for (const r of set) {
    const sa = (r.address as { socket_address?: { port_value?: number } } | undefined)?.socket_address;
    if (r.name === 'virtualOutbound' && sa) sa.port_value = ports.outbound;
    if (r.name === 'virtualInbound' && sa) sa.port_value = ports.inbound;
  }
  return set;
}

/** A resource in proto3 JSON (with "@type") as the wire carries it: encoded, then decoded as an Any. */
export function encodeAny(json: Json): AnyMessage {
  const AnyType = loadXdsProtos().root.lookupType('google.protobuf.Any');
  return AnyType.decode(AnyType.encode(fromProto3Json(AnyType, json)).finish()) as unknown as AnyMessage;
}

export { freePort };

/** Resolves once the Snapshot of the responses just handled is built: two immediates on (engine.ts, rebuild), when none was queued before them. */
export const afterBuild = () => new Promise<void>((r) => setImmediate(() => setImmediate(r)));

/** An engine without static resources or timeouts (warming waits for ever), publishing into `published`. */
export function engineInto(published: Published[], more: Partial<EngineOptions> = {}): XdsEngine {
  return new XdsEngine({
    protos: loadXdsProtos(),
    statics: { listeners: [], clusters: [] },
    warming: { edsMs: 0, rdsMs: 0 },
    fetchTimeoutMs: { cluster: 0, listener: 0 },
    publish: async (p) => void published.push(p),
    log: pino({ level: 'silent' }),
    ...more,
  });
}

export const staticCluster = (name: string, address: string, port: number, extra: Json = {}) => ({
  name,
  type: 'STATIC',
  connect_timeout: '1s',
  load_assignment: { cluster_name: name, endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address, port_value: port } } } }] }] },
  ...extra,
});

/** Istio's bootstrap shape: ADS through a static xds-grpc cluster, CDS/LDS over ADS with no fetch timeout. */
export function adsBootstrap(o: { xdsAddress: string; xdsPort: number; apiType?: 'GRPC' | 'DELTA_GRPC'; node?: Json; adminPort?: number; staticClusters?: Json[]; fetchTimeout?: string }): Json {
  const source = { ads: {}, initial_fetch_timeout: o.fetchTimeout ?? '0s', resource_api_version: 'V3' };
  return {
    node: o.node ?? { id: 'sidecar~10.1.2.3~geo-5c54dcd5bd-z5ghf.hr2~hr2.svc.cluster.local', cluster: 'geo.hr2', metadata: { ISTIO_VERSION: '1.18.2' } },
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: o.adminPort ?? 0 } } },
    dynamic_resources: {
      lds_config: source,
      cds_config: source,
      ads_config: { api_type: o.apiType ?? 'GRPC', transport_api_version: 'V3', set_node_on_first_message_only: true, grpc_services: [{ envoy_grpc: { cluster_name: 'xds-grpc' } }] },
    },
    static_resources: { clusters: [staticCluster('xds-grpc', o.xdsAddress, o.xdsPort), ...(o.staticClusters ?? [])] },
  };
}

/** Waits for a line at or after `from` (an index into proc.lines) that parses and satisfies `pred`. */
export async function waitJsonAfter<T = Json>(proc: Proc, from: number, pred: (o: T) => boolean, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let i = from;
  for (;;) {
    for (; i < proc.lines.length; i++) {
      try {
        const o = JSON.parse(proc.lines[i]!) as T;
        if (pred(o)) return o;
      } catch {
        // not JSON
      }
    }
    if (proc.child.exitCode !== null) throw new Error(`${proc.label} exited (${proc.child.exitCode}); output:\n${proc.lines.slice(-40).join('\n')}`);
    if (Date.now() > deadline) throw new Error(`${proc.label}: timed out; output since ${from}:\n${proc.lines.slice(from).slice(-60).join('\n')}`);
    await sleep(20);
  }
}

export const jsonLines = <T = Json>(proc: Proc, from = 0): T[] =>
  proc.lines.slice(from).flatMap((l) => {
    try {
      return [JSON.parse(l) as T];
    } catch {
      return [];
    }
  });

export interface AdsRequest {
  event: 'request';
  stream: number;
  api: 'sotw' | 'delta';
  type: string;
  kind: 'initial' | 'ack' | 'nack' | 'names' | 'stale' | 'unsubscribe';
  version?: string;
  nonce: string;
  names?: string[];
  subscribe?: string[];
  unsubscribe?: string[];
  initial_resource_versions?: Record<string, string>;
  error_detail?: { code?: number; message?: string };
  node?: { id: string; cluster: string; metadata: Json };
}

/** The test ADS server process. */
export class AdsServer {
  private constructor(readonly proc: Proc, readonly port: number) {}

  static async start(o: { resources: Json[]; version?: string; port?: number; host?: string; ns?: string; label?: string; timeoutMs?: number }): Promise<AdsServer> {
    const file = writeTemp(`ads-${o.label ?? 'res'}-${Date.now()}.json`, { version: o.version ?? 'v1', resources: o.resources });
    const args = ['--resources', file, '--port', String(o.port ?? 0), '--host', o.host ?? '127.0.0.1'];
    const proc = o.ns ? spawnNode(o.ns, peer('ads-server'), args) : new Proc(spawn(process.execPath, [peer('ads-server'), ...args], { cwd: repoRoot, stdio: ['pipe', 'pipe', 'pipe'] }), 'ads-server');
    const l = await proc.waitJson<{ event?: string; port?: number }>((x) => x.event === 'listening', o.timeoutMs ?? 20_000);
    return new AdsServer(proc, l.port!);
  }

  /** Sends a command and waits until the server has carried it out. */
  async command(c: Json): Promise<void> {
    const from = this.proc.lines.length;
    this.proc.child.stdin!.write(`${JSON.stringify(c)}\n`);
    const r = await waitJsonAfter<{ event?: string; cmd?: string; error?: string }>(this.proc, from, (o) => o.event === 'done' || o.event === 'error');
    if (r.event === 'error') throw new Error(`ads-server: ${r.error}`);
  }

  get mark(): number {
    return this.proc.lines.length;
  }

  requests(from = 0): AdsRequest[] {
    return jsonLines<AdsRequest>(this.proc, from).filter((o) => o.event === 'request');
  }

  waitRequest(from: number, pred: (r: AdsRequest) => boolean, timeoutMs?: number): Promise<AdsRequest> {
    return waitJsonAfter<AdsRequest>(this.proc, from, (o) => o.event === 'request' && pred(o), timeoutMs);
  }

  /**
   * Every request of the sidecar's initial sequence, read once it has answered the last response of it (NDS).
   * Readiness comes with the routes, before the NDS request it sends next has necessarily reached this server.
   */
  async initialRequests(timeoutMs = 20_000): Promise<AdsRequest[]> {
    await this.waitRequest(0, (r) => r.type === 'nametable' && r.kind === 'ack', timeoutMs);
    return this.requests();
  }

  /**
   * Every response sent so far, each paired with the sidecar's answer to its nonce. The answer is awaited: the
   * sidecar may be ready (and the test running) before its last ACK has crossed the stream.
   */
  async answered(): Promise<{ response: Json; answer: AdsRequest }[]> {
    const responses = jsonLines<Json>(this.proc).filter((o) => o.event === 'response');
    return Promise.all(responses.map(async (response) => ({ response, answer: await this.waitRequest(0, (r) => r.nonce === response.nonce) })));
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
    this.proc.kill(signal);
    return this.proc.exited;
  }
}

/** The sidecar in the test's own network namespace (no capture), admin on an ephemeral port. */
export class SidecarProc {
  private constructor(readonly proc: Proc, readonly admin: string) {}

  static async start(bootstrap: Json, o: { env?: Record<string, string>; args?: string[]; timeoutMs?: number } = {}): Promise<SidecarProc> {
    const file = writeTemp(`sidecar-${Date.now()}-${Math.random().toString(36).slice(2)}.json`, bootstrap);
    // The node identity reads the pod environment; the test's own must not leak into it.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(POD_NAME|POD_NAMESPACE|INSTANCE_IP|SERVICE_ACCOUNT|ISTIO_META_.*|ISTIO_METAJSON_.*)$/.test(k)));
    const child = spawn(process.execPath, [cliPath, 'run', '-c', file, '--health-port', '0', '--prometheus-port', '0', '--drain-timeout', '1s', ...(o.args ?? [])], {
      cwd: repoRoot,
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...env, XSIDECAR_LOG_LEVEL: 'info', ...o.env },
    });
    const proc = new Proc(child, 'sidecar');
    const started = await proc.waitJson<{ msg?: string; admin?: string }>((x) => x.msg === 'xsidecar started', o.timeoutMs ?? 20_000);
    return new SidecarProc(proc, started.admin!);
  }

  async get(path: string): Promise<{ status: number; body: string }> {
    const res = await fetch(`http://${this.admin}${path}`);
    return { status: res.status, body: await res.text() };
  }

  /** Polls /ready until it is 200 or `timeoutMs` passes; returns the last status. */
  async waitReady(timeoutMs = 20_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let status = 0;
    while (Date.now() < deadline && (status = (await this.get('/ready')).status) !== 200) await sleep(50);
    return status;
  }

  /** Sum of a Prometheus metric's samples, read from the admin port (labels as in readMetric). */
  async metric(name: string, labels?: string): Promise<number> {
    return readMetric((await this.get('/stats/prometheus')).body, name, labels);
  }

  async configDump(): Promise<{ configs: Json[] }> {
    return JSON.parse((await this.get('/config_dump')).body) as { configs: Json[] };
  }

  /** Polls until `pred` holds for the config dump (a push is applied asynchronously). */
  async waitDump(pred: (d: { configs: Json[] }) => boolean, timeoutMs = 20_000): Promise<{ configs: Json[] }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const d = await this.configDump();
      if (pred(d)) return d;
      if (Date.now() > deadline) throw new Error(`config_dump never matched:\n${JSON.stringify(d).slice(0, 3000)}`);
      await sleep(50);
    }
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    this.proc.kill(signal);
  }
}

export const dumpSection = (d: { configs: Json[] }, type: string): Json => d.configs.find((c) => String(c['@type']).endsWith(type))!;

/** An echo server peer in the test's namespace (or `ns`): echoes, then names itself when the client half-closes. */
export async function startEcho(name: string, o: { ns?: string; host?: string; port?: number } = {}): Promise<{ proc: Proc; port: number }> {
  const args = [name, o.host ?? '127.0.0.1', String(o.port ?? 0)];
  const proc = o.ns ? spawnNode(o.ns, peer('echo-server'), args) : new Proc(spawn(process.execPath, [peer('echo-server'), ...args], { stdio: ['pipe', 'pipe', 'pipe'] }), name);
  const ready = await proc.waitJson<{ ready?: boolean; port?: number }>((x) => x.ready === true);
  return { proc, port: ready.port! };
}

export interface RoundTrip {
  ok: boolean;
  received: string;
  error?: string;
}

/** One short TCP exchange: send, half-close, read to the end. */
export function tcpRoundTrip(host: string, port: number, payload: string, timeoutMs = 3000): Promise<RoundTrip> {
  return new Promise((resolve) => {
    let received = '';
    const socket = connect({ host, port, allowHalfOpen: true });
    const done = (r: RoundTrip) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => done({ ok: false, received, error: 'timeout' }), timeoutMs);
    socket.on('connect', () => socket.end(payload));
    socket.on('data', (d) => (received += d.toString()));
    socket.on('end', () => done({ ok: received.startsWith(payload), received, error: received.startsWith(payload) ? undefined : 'short reply' }));
    socket.on('error', (e: NodeJS.ErrnoException) => done({ ok: false, received, error: e.code ?? e.message }));
  });
}

/** Keeps making connections until stopped; counts what failed and where the good ones went. */
export function connectionLoop(host: string, port: number, gapMs = 20) {
  const stats = { ok: 0, failed: 0, errors: [] as string[], servedBy: new Map<string, number>() };
  let running = true;
  const done = (async () => {
    let i = 0;
    while (running) {
      const r = await tcpRoundTrip(host, port, `req-${i++}`);
      if (r.ok) {
        stats.ok++;
        const by = r.received.split('\n')[1]?.split('|')[0] ?? '?';
        stats.servedBy.set(by, (stats.servedBy.get(by) ?? 0) + 1);
      } else {
        stats.failed++;
        stats.errors.push(r.error ?? '?');
      }
      await sleep(gapMs);
    }
  })();
  return {
    stats,
    stop: async () => {
      running = false;
      await done;
      return stats;
    },
  };
}

// Istio-shaped resources for the traffic tests.
const EDS_CONFIG = { ads: {}, initial_fetch_timeout: '0s', resource_api_version: 'V3' };
export const TCP_PROXY = 'type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy';

export const edsCluster = (name: string): Json => ({
  '@type': 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  name,
  type: 'EDS',
  eds_cluster_config: { eds_config: EDS_CONFIG, service_name: name },
  connect_timeout: '1s',
  lb_policy: 'LEAST_REQUEST',
});

export const cla = (name: string, endpoints: { address: string; port: number }[]): Json => ({
  '@type': 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
  cluster_name: name,
  endpoints: [{ locality: {}, lb_endpoints: endpoints.map((e) => ({ endpoint: { address: { socket_address: { address: e.address, port_value: e.port } } }, health_status: 'HEALTHY', load_balancing_weight: 1 })) }],
});

/**
 * Two echo servers (killed with `procs`) and the resources of the ADS traffic tests: the Istio fixture set
 * on free ports, plus ECHO as an EDS cluster on echo-a behind a plain listener on `ports.echo`.
 */
export async function echoWorld(procs: { kill(s?: NodeJS.Signals): unknown }[]) {
  const echoA = await startEcho('echo-a');
  const echoB = await startEcho('echo-b');
  procs.push(echoA.proc, echoB.proc);
  const ports = { outbound: await freePort(), inbound: await freePort(), echo: await freePort() };
  const resources = [...istioFixtureSet(ports), edsCluster(ECHO), cla(ECHO, [{ address: '127.0.0.1', port: echoA.port }]), tcpListener('echo-listener', '127.0.0.1', ports.echo, ECHO)];
  return { echoA, echoB, ports, resources };
}

/** A tcp_proxy listener: bound (a plain listener) or, with bindToPort false, Istio's ClusterIP_PORT hand-off target. */
export const tcpListener = (name: string, address: string, port: number, cluster: string, bindToPort = true): Json => ({
  '@type': 'type.googleapis.com/envoy.config.listener.v3.Listener',
  name,
  address: { socket_address: { address, port_value: port } },
  filter_chains: [
    {
      filters: [
        { name: 'istio.stats', typed_config: { '@type': 'type.googleapis.com/stats.PluginConfig' } },
        { name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': TCP_PROXY, stat_prefix: cluster, cluster } },
      ],
    },
  ],
  traffic_direction: 'OUTBOUND',
  ...(bindToPort ? {} : { bind_to_port: false }),
});

/** A listener that cannot work: its only filter is one we do not implement. */
export const brokenListener = (name: string): Json => ({
  '@type': 'type.googleapis.com/envoy.config.listener.v3.Listener',
  name,
  address: { socket_address: { address: '10.99.0.1', port_value: 99 } },
  filter_chains: [{ filters: [{ name: 'istio.stats', typed_config: { '@type': 'type.googleapis.com/stats.PluginConfig' } }] }],
  bind_to_port: false,
});
