/**
 * Istio's standard metrics, aggregated in plain numbers on the hot path and turned into Prometheus
 * samples only when scraped. A request is counted on an Edge (the fixed labels: reporter, both peers,
 * destination service) under an outcome (code, gRPC status, flags); edges are interned by their labels
 * and cached on the upstream Host per reporter, so a request costs two map lookups and a few additions.
 */
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { registry } from '../metrics.js';
import { throttled } from '../throttle.js';
import { AccessLog } from './access-log.js';
import { flagsString } from './flags.js';
import { Buckets, histogramSamples, type Sample } from './histogram.js';
import {
  type ClusterService,
  type Direction,
  destinationService,
  edgeLabels,
  endpointWorkload,
  listenerDirection,
  localWorkload,
  UNKNOWN,
  UNKNOWN_WORKLOAD,
  type Workload,
} from './labels.js';

/** What telemetry reads of an upstream host (src/upstream/host.ts Host). */
export interface TelemetryHost {
  readonly key: string;
  /** The endpoint's `filter_metadata.istio.workload`. */
  readonly workload?: string;
  /** A slot owned by this module: the host's edges per reporter. */
  telemetry: unknown;
  /** Owned by this module: the identities of the last mTLS connection to the host (notePeerIdentity). */
  principals: Principals | undefined;
}

/** Both ends of an mTLS connection, by their certificates' SPIFFE ids (`unknown` when not mTLS). */
export interface Principals {
  readonly local: string;
  readonly peer: string;
}

const PLAINTEXT: Principals = { local: UNKNOWN, peer: UNKNOWN };

/** A certificate's identity as Istio's stats filter takes it: its URI SAN (the SPIFFE id), else unknown. */
function uriSan(cert: { subjectaltname?: string } | null | undefined): string {
  const uri = (cert?.subjectaltname ?? '').split(', ').find((s) => s.startsWith('URI:'));
  return uri ? uri.slice(4) : UNKNOWN;
}

/** The principals of a connection: from its TLS session when it is one, else unknown on both ends. */
export function principalsOf(socket: Socket | undefined): Principals {
  const tls = socket as (Socket & Partial<Pick<TLSSocket, 'getCertificate' | 'getPeerCertificate'>>) | undefined;
  if (!tls || !(tls as { encrypted?: boolean }).encrypted || !tls.getPeerCertificate) return PLAINTEXT;
  return { local: uriSan(tls.getCertificate?.() as { subjectaltname?: string } | null), peer: uriSan(tls.getPeerCertificate()) };
}

/**
 * Called by the upstream side once a connection to `host` is up: an mTLS peer's identity becomes the
 * destination principal of its outbound edges (and ours the source principal). A changed identity drops
 * the host's cached edges so the next request interns edges with the new labels.
 */
export function notePeerIdentity(host: TelemetryHost, socket: Socket): void {
  const p = principalsOf(socket);
  const was = host.principals ?? PLAINTEXT;
  if (p.local === was.local && p.peer === was.peer) return;
  host.principals = p === PLAINTEXT ? undefined : p;
  host.telemetry = undefined;
}

/** What telemetry reads of a cluster (src/config/model.ts Cluster). */
export interface TelemetryCluster {
  readonly name: string;
  /** Istio's cluster metadata `istio.services: [{host, name, namespace}]`: the destination service. */
  readonly istioServices?: readonly ClusterService[];
}

export interface TelemetryOptions {
  /** This pod's node metadata (bootstrap `node.metadata` with ISTIO_META_* applied). */
  readonly nodeMetadata?: Readonly<Record<string, unknown>>;
  /** False: no istio_* metrics are recorded (the bench's "metrics off"; Envoy's stats_matcher reject_all). */
  readonly enabled?: boolean;
  /** Distinct (service, method) pairs in xsidecar_rpc_* before new ones fold into `other`. */
  readonly maxRpcMethods?: number;
  /** `--access-log PATH|-`. */
  readonly accessLog?: string;
}

export const telemetry = {
  enabled: true,
  local: UNKNOWN_WORKLOAD as Workload,
  maxRpcMethods: 500,
  /** The process-wide access log (--access-log); filters may name their own (accessLogFor). */
  accessLog: undefined as AccessLog | undefined,
};

const logs = new Map<string, AccessLog>();

/**
 * The access log writing to `path`, opened once and shared by every filter naming it. A path that cannot
 * be opened is an error at start-up (`strict`, the command line) and a logged warning for a filter's
 * config (a connection must not fail over it): that filter then logs nothing.
 */
export function accessLogFor(path: string, strict = false): AccessLog | undefined {
  let l = logs.get(path);
  if (l) return l;
  try {
    l = new AccessLog(path);
  } catch (e) {
    if (strict) throw new Error(`access log ${path}: ${(e as Error).message}`);
    throttled.warn(`access log ${path}`, { path, err: (e as Error).message }, 'access log cannot be opened, not logging');
    return undefined;
  }
  logs.set(path, l);
  return l;
}

export function configureTelemetry(opts: TelemetryOptions): void {
  telemetry.enabled = opts.enabled ?? true;
  telemetry.local = localWorkload(opts.nodeMetadata);
  if (opts.maxRpcMethods !== undefined) telemetry.maxRpcMethods = opts.maxRpcMethods;
  telemetry.accessLog = opts.accessLog ? accessLogFor(opts.accessLog, true) : undefined;
  // Labels were derived from the old identity: start over (only at start-up in practice).
  reporters.clear();
  edges.clear();
}

export async function closeAccessLogs(): Promise<void> {
  await Promise.all([...logs.values()].map((l) => l.close()));
}

/** One outcome of an edge: the counters and histograms of one full label set. */
export class Series {
  count = 0;
  readonly duration = new Buckets();
  readonly requestBytes = new Buckets();
  readonly responseBytes = new Buckets();
  constructor(readonly labels: Record<string, string>) {}
}

/** An L4 outcome: connections and bytes for one full label set. */
export class TcpSeries {
  opened = 0;
  closed = 0;
  sent = 0;
  received = 0;
  constructor(readonly labels: Record<string, string>) {}
}

export class Edge {
  readonly outcomes = new Map<number, Series>();
  readonly tcp = new Map<number, TcpSeries>();
  constructor(
    readonly reporter: Reporter,
    /** reporter … destination_cluster, in Istio's order. */
    readonly labels: Record<string, string>,
  ) {}

  series(code: number, grpc: number, flags: number): Series {
    const key = (code * 64 + grpc) * 65536 + flags;
    let s = this.outcomes.get(key);
    if (!s) {
      s = new Series({
        ...this.labels,
        request_protocol: 'grpc',
        response_code: String(code),
        grpc_response_status: String(grpc),
        response_flags: flagsString(flags),
        connection_security_policy: this.reporter.security,
        rpc_protocol: this.reporter.protocol,
      });
      this.outcomes.set(key, s);
    }
    return s;
  }

  tcpSeries(flags: number): TcpSeries {
    let s = this.tcp.get(flags);
    if (!s) {
      s = new TcpSeries({ ...this.labels, request_protocol: 'tcp', response_flags: flagsString(flags), connection_security_policy: this.reporter.security });
      this.tcp.set(flags, s);
    }
    return s;
  }
}

/**
 * Who reports and how: the listener's direction, the connection's protocol (a codec name, or `tcp`) and
 * its security policy. A few of these exist per process; each connection holds one.
 */
export class Reporter {
  /** Edges without an upstream host (no route, no healthy endpoint), by cluster name ('' for none). */
  readonly noHost = new Map<string, Edge>();
  constructor(
    readonly direction: Direction,
    readonly protocol: string,
    readonly security: string,
    /** Inbound: the caller's and our identity from the downstream mTLS session (outbound takes them per host). */
    readonly principals: Principals = PLAINTEXT,
  ) {}
}

const reporters = new Map<string, Reporter>();
const edges = new Map<string, Edge>();

/**
 * Istio reports `unknown` on the source side (it does not know what the server will accept) and, on the
 * destination side, `mutual_tls` or `none` by what the connection is. `security` overrides (the mTLS
 * work sets it when it terminates TLS itself).
 */
export function securityPolicy(direction: Direction, socket: Socket | undefined, security?: string): string {
  if (security) return security;
  if (direction === 'outbound') return 'unknown';
  return socket && (socket as { encrypted?: boolean }).encrypted ? 'mutual_tls' : 'none';
}

/** The reporter for a connection accepted on `listener`, speaking `protocol` (`tcp` at L4). */
export function reporterFor(listener: Parameters<typeof listenerDirection>[0], protocol: string, socket?: Socket, security?: string): Reporter {
  const direction = listenerDirection(listener);
  const sec = securityPolicy(direction, socket, security);
  const principals = direction === 'inbound' ? principalsOf(socket) : PLAINTEXT;
  // One reporter per calling identity: bounded by the mesh's service accounts, and only for accepted mTLS peers.
  const key = `${direction}|${protocol}|${sec}|${principals.peer}|${principals.local}`;
  let r = reporters.get(key);
  if (!r) reporters.set(key, (r = new Reporter(direction, protocol, sec, principals)));
  return r;
}

function internEdge(r: Reporter, cluster: TelemetryCluster | undefined, host: TelemetryHost | undefined): Edge {
  const local = telemetry.local;
  const svc = destinationService(cluster?.name, cluster?.istioServices, local);
  // Istio takes the principals from the connection's certificates, never from metadata.
  const [source, destination] =
    r.direction === 'inbound'
      ? [{ ...UNKNOWN_WORKLOAD, principal: r.principals.peer }, { ...local, principal: r.principals.local }]
      : [{ ...local, principal: host?.principals?.local ?? UNKNOWN }, { ...endpointWorkload(host?.workload), principal: host?.principals?.peer ?? UNKNOWN }];
  const labels = edgeLabels(r.direction, source, destination, svc);
  const key = `${r.direction}|${r.protocol}|${r.security}|${JSON.stringify(labels)}`;
  let e = edges.get(key);
  if (!e) edges.set(key, (e = new Edge(r, labels)));
  return e;
}

/** The edge of a request or connection from `r` to `host` of `cluster` (either may be missing). */
export function edgeOf(r: Reporter, cluster: TelemetryCluster | undefined, host: TelemetryHost | undefined): Edge {
  if (host) {
    let m = host.telemetry as Map<Reporter, Edge> | undefined;
    if (!m) host.telemetry = m = new Map();
    let e = m.get(r);
    if (!e) m.set(r, (e = internEdge(r, cluster, host)));
    return e;
  }
  const name = cluster?.name ?? '';
  let e = r.noHost.get(name);
  if (!e) r.noHost.set(name, (e = internEdge(r, cluster, undefined)));
  return e;
}

/** One RPC request's outcome. */
export function recordRequest(edge: Edge, code: number, grpc: number, flags: number, durationMs: number, requestBytes: number, responseBytes: number): void {
  const s = edge.series(code, grpc, flags);
  s.count++;
  s.duration.observe(durationMs);
  s.requestBytes.observe(requestBytes);
  s.responseBytes.observe(responseBytes);
}

/** An L4 connection being relayed: its bytes are reported while it lasts (Istio reports them periodically). */
export class TcpConn {
  private sentSeen = 0;
  private receivedSeen = 0;
  /** Downstream socket: what it wrote went to the caller (sent); upstream: what came from the caller (received). */
  down: Socket | undefined;
  up: Socket | undefined;

  constructor(readonly edge: Edge) {
    edge.tcpSeries(0).opened++;
    open.add(this);
  }

  /** Moves the bytes relayed since the last look onto the `-` series (flags land on closing). */
  sweep(): void {
    const sent = this.down?.bytesWritten ?? 0;
    const received = this.up?.bytesWritten ?? 0;
    if (sent === this.sentSeen && received === this.receivedSeen) return;
    const s = this.edge.tcpSeries(0);
    s.sent += sent - this.sentSeen;
    s.received += received - this.receivedSeen;
    this.sentSeen = sent;
    this.receivedSeen = received;
  }

  close(flags: number): void {
    if (!open.delete(this)) return;
    this.sweep();
    this.edge.tcpSeries(flags).closed++;
  }
}

const open = new Set<TcpConn>();

// ---- collection: only here are label objects and samples built ----

interface Collected {
  name: string;
  help: string;
  type: 'counter' | 'histogram';
  values: Sample[];
  aggregator: 'sum';
}

function scrapedMetric(name: string, help: string, type: 'counter' | 'histogram', fill: (out: Sample[]) => void): void {
  registry.registerMetric({
    name,
    help,
    type,
    aggregator: 'sum',
    get(): Collected {
      const values: Sample[] = [];
      if (telemetry.enabled) fill(values);
      return { name, help, type, values, aggregator: 'sum' };
    },
    reset() {},
  } as unknown as Parameters<typeof registry.registerMetric>[0]);
}

function eachSeries(f: (s: Series) => void): void {
  for (const e of edges.values()) for (const s of e.outcomes.values()) f(s);
}
function eachTcp(f: (s: TcpSeries) => void): void {
  for (const c of open) c.sweep();
  for (const e of edges.values()) for (const s of e.tcp.values()) f(s);
}

scrapedMetric('istio_requests_total', 'Requests, in Istio\'s labels; RPC in gRPC\'s shape with rpc_protocol', 'counter', (out) => eachSeries((s) => out.push({ labels: s.labels, value: s.count })));
scrapedMetric('istio_request_duration_milliseconds', 'Request duration', 'histogram', (out) => eachSeries((s) => histogramSamples('istio_request_duration_milliseconds', s.labels, s.duration, out)));
scrapedMetric('istio_request_bytes', 'Request frame sizes', 'histogram', (out) => eachSeries((s) => histogramSamples('istio_request_bytes', s.labels, s.requestBytes, out)));
scrapedMetric('istio_response_bytes', 'Response frame sizes', 'histogram', (out) => eachSeries((s) => histogramSamples('istio_response_bytes', s.labels, s.responseBytes, out)));
scrapedMetric('istio_tcp_connections_opened_total', 'L4 connections opened', 'counter', (out) => eachTcp((s) => s.opened > 0 && out.push({ labels: s.labels, value: s.opened })));
scrapedMetric('istio_tcp_connections_closed_total', 'L4 connections closed', 'counter', (out) => eachTcp((s) => s.closed > 0 && out.push({ labels: s.labels, value: s.closed })));
scrapedMetric('istio_tcp_sent_bytes_total', 'Bytes sent to the downstream at L4 (responses)', 'counter', (out) => eachTcp((s) => s.sent > 0 && out.push({ labels: s.labels, value: s.sent })));
scrapedMetric('istio_tcp_received_bytes_total', 'Bytes received from the downstream at L4 (requests)', 'counter', (out) => eachTcp((s) => s.received > 0 && out.push({ labels: s.labels, value: s.received })));
