/**
 * Istio's Clusters read straight from their bytes into the model, as cla-wire.ts reads its endpoints. A
 * mesh has a cluster per service and subset, each carrying an UpstreamTlsContext for mTLS, and the general
 * way (bytes to proto3 JSON, then a path-tracking reader over it) made some sixty objects per cluster to
 * keep a dozen fields. On the 1,000-service mesh of bench/xds-scale.ts (2,003 clusters) that was most of
 * a full push.
 *
 * Read here: the shape istiod sends for an outbound EDS cluster (name, type, EDS service name, connect
 * timeout, LB policy, circuit breakers, outlier detection, the `istio` metadata, `transport_socket_matches`
 * with Istio's mTLS context or a raw buffer). Parts decoded the same way for many clusters (circuit
 * breakers, outlier detection, a service's metadata) go the general way once per distinct bytes, and
 * every push sends the same bytes again; fields the model ignores are
 * still parsed, once per distinct bytes, so that bytes the general way would refuse are refused. Anything
 * else (another field, a field sent twice that would merge, a value the model warns about) gives
 * undefined and the resource goes the general way, which accepts it or says what is wrong. So what is read
 * here is what the general way would make of the same bytes (test/xds/cluster-wire.test.ts compares the
 * two on fixtures and on corrupted copies).
 */
import type protobuf from 'protobufjs';
import { DEFAULT_CONNECT_TIMEOUT_MS, istioServicesOf, lbPolicyAt, newCluster } from '../config/cluster.js';
import { CLUSTER_TYPES, type Cluster, type StringMatcher } from '../config/model.js';
import { ObjReader, parseDurationMs } from '../config/reader.js';
import { decodeCircuitBreakers, decodeOutlierDetection } from '../config/resilience.js';
import { SharedTable } from '../config/shared-table.js';
import { type TransportSocketMatch, tlsVersionAt, type UpstreamTls } from '../config/tls-context.js';
import { durationString } from './proto-json.js';
import type { XdsProtos } from './protos.js';
import { asBuffer, WireCursor } from './wire-json.js';
import { directly, elsewhere, LEN, nonEmpty, PartTable, readByBytes, skipParsed, stringStruct, tag, uint32Wrapper, VARINT } from './wire-model.js';

const UPSTREAM_TLS = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext';
const RAW_BUFFER = 'type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer';

/**
 * Where the general decoder meets each part (the Cluster is depth 0): its nesting limit counts from the
 * top of the resource, so a part handed to it alone starts at its own depth.
 */
const DEPTH = { clusterField: 1, edsConfig: 2, certificateSdsConfig: 7, validationSdsConfig: 8 } as const;

/** What the reader hands to the general decoder, per schema (a part's verdict may differ between schemas). */
interface Types {
  readonly configSource: protobuf.Type;
  readonly commonLbConfig: protobuf.Type;
  readonly filter: protobuf.Type;
  readonly breakers: PartTable<Cluster['circuitBreakers']>;
  readonly outliers: PartTable<Cluster['outlierDetection']>;
  /** A service's clusters (its port, its subsets) carry the same metadata, and every push sends it again. */
  readonly istioServices: PartTable<Cluster['istioServices']>;
  /** Each cluster's socket matches, by their bytes: its SNI and SANs make them its own, and every push sends them again. */
  readonly socketMatches: SharedTable<TransportSocketMatch>;
}
/**
 * Room for a mesh's socket matches (two per cluster, one of them the same plaintext match everywhere), and
 * how long one may be to be kept: Istio's mTLS match is about 600 bytes.
 */
const SOCKET_MATCHES = 8192, SOCKET_MATCH_BYTES = 2048;
const typesBySchema = new WeakMap<protobuf.Root, Types>();
function typesOf(protos: XdsProtos): Types {
  let types = typesBySchema.get(protos.root);
  if (!types) {
    const t = (name: string) => protos.root.lookupType(name);
    const at = DEPTH.clusterField;
    types = {
      configSource: t('envoy.config.core.v3.ConfigSource'),
      commonLbConfig: t('envoy.config.cluster.v3.Cluster.CommonLbConfig'),
      filter: t('envoy.config.cluster.v3.Filter'),
      breakers: new PartTable(t('envoy.config.cluster.v3.CircuitBreakers'), at, (plain, warnings) => decodeCircuitBreakers(ObjReader.of(plain, 'circuit_breakers', { warnings }))),
      outliers: new PartTable(t('envoy.config.cluster.v3.OutlierDetection'), at, (plain, warnings) => decodeOutlierDetection(ObjReader.of(plain, 'outlier_detection', { warnings }))),
      istioServices: new PartTable(t('envoy.config.core.v3.Metadata'), at, (plain) => istioServicesOf(plain), 4096),
      socketMatches: new SharedTable(SOCKET_MATCHES, SOCKET_MATCH_BYTES),
    };
    typesBySchema.set(protos.root, types);
  }
  return types;
}

/** A varint that proto3 JSON reads as a small non-negative number (int64 seconds, int32 nanos): below 2^31. */
function smallVarint(c: WireCursor, end: number): number {
  const start = c.pos;
  const v = c.uint32(end);
  const length = c.pos - start;
  // uint32() keeps the low 32 bits: a fifth byte above 7 carries higher ones (an int64's seconds).
  return length > 5 || (length === 5 && c.buf[c.pos - 1]! > 0x07) || v > 0x7fffffff ? elsewhere() : v;
}

/** Whole seconds, as every cluster's connect timeout mostly is, in ms: their string made and parsed once. */
const wholeSecondsMs = new Map<number, number>();

/** google.protobuf.Duration, in ms as the general decoder makes it (its proto3 JSON string, parsed). */
function durationMs(c: WireCursor, end: number): number {
  let seconds = 0, nanos = 0;
  while (c.pos < end) {
    const t = c.tag(end);
    if (t === tag(1, VARINT)) seconds = smallVarint(c, end);
    else if (t === tag(2, VARINT)) nanos = smallVarint(c, end);
    else elsewhere();
  }
  const whole = nanos === 0 ? wholeSecondsMs.get(seconds) : undefined;
  if (whole !== undefined) return whole;
  const ms = parseDurationMs(durationString(seconds, nanos)) ?? elsewhere();
  if (nanos === 0 && wholeSecondsMs.size < 256) wholeSecondsMs.set(seconds, ms);
  return ms;
}

/** envoy.type.matcher.v3.StringMatcher: exact, prefix, suffix or contains (a regex goes the general way). */
function stringMatcher(c: WireCursor, end: number): StringMatcher {
  let kind: StringMatcher['kind'] | undefined;
  let value = '';
  let ignoreCase = false;
  while (c.pos < end) {
    const t = c.tag(end);
    const k = t === tag(1, LEN) ? 'exact' : t === tag(2, LEN) ? 'prefix' : t === tag(3, LEN) ? 'suffix' : t === tag(7, LEN) ? 'contains' : undefined;
    if (k) {
      kind = k; // a oneof: the last one wins
      value = nonEmpty(c, end);
    } else if (t === tag(6, VARINT)) ignoreCase = c.uint32(end) !== 0;
    else elsewhere();
  }
  return kind ? { kind, value, ignoreCase } : elsewhere();
}

/**
 * A message of a name and a config source (SdsSecretConfig, Cluster.EdsClusterConfig): the name ('' when
 * absent). The source is only parsed: xsidecar answers Istio's SDS itself, and EDS comes over ADS.
 */
function nameBesideSource(c: WireCursor, end: number, fields: { name: number; source: number }, types: Types, sourceDepth: number): string {
  let name = '';
  let sourceSeen = false;
  while (c.pos < end) {
    const t = c.tag(end);
    if (t === tag(fields.name, LEN)) name = c.string(end);
    else if (t === tag(fields.source, LEN) && !sourceSeen) {
      sourceSeen = true;
      skipParsed(types.configSource, sourceDepth, c, c.delimited(end));
    } else elsewhere();
  }
  return name;
}

/** SdsSecretConfig: its name, which the general decoder requires. */
const sdsSecretName = (c: WireCursor, end: number, types: Types, sourceDepth: number): string =>
  nameBesideSource(c, end, { name: 1, source: 2 }, types, sourceDepth) || elsewhere();

/** CommonTlsContext.CombinedCertificateValidationContext: the SANs to match, and the roots' secret. */
function combinedValidation(c: WireCursor, end: number, types: Types): { matchSans: StringMatcher[]; validationSecret?: string } {
  const matchSans: StringMatcher[] = [];
  let validationSecret: string | undefined;
  let defaultSeen = false;
  while (c.pos < end) {
    const t = c.tag(end);
    if (t === tag(1, LEN) && !defaultSeen) {
      defaultSeen = true;
      const dEnd = c.delimited(end);
      while (c.pos < dEnd) {
        if (c.tag(dEnd) !== tag(9, LEN)) elsewhere(); // match_subject_alt_names only
        matchSans.push(stringMatcher(c, c.delimited(dEnd)));
      }
    } else if (t === tag(2, LEN) && validationSecret === undefined) validationSecret = sdsSecretName(c, c.delimited(end), types, DEPTH.validationSdsConfig);
    else elsewhere();
  }
  return { matchSans, validationSecret };
}

/** envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext as Istio's ISTIO_MUTUAL sends it. */
function upstreamTls(c: WireCursor, end: number, types: Types): UpstreamTls {
  let sni: string | undefined;
  let certificateSecret: string | undefined;
  let validation: { matchSans: StringMatcher[]; validationSecret?: string } | undefined;
  const alpn: string[] = [];
  let minVersion: UpstreamTls['minVersion'] = 'TLSv1.2', maxVersion: UpstreamTls['maxVersion'] = 'TLSv1.2';
  let commonSeen = false, paramsSeen = false;
  while (c.pos < end) {
    const t = c.tag(end);
    if (t === tag(2, LEN)) sni = nonEmpty(c, end);
    else if (t === tag(1, LEN) && !commonSeen) {
      commonSeen = true;
      const cEnd = c.delimited(end);
      while (c.pos < cEnd) {
        const ct = c.tag(cEnd);
        if (ct === tag(4, LEN)) alpn.push(c.string(cEnd));
        else if (ct === tag(6, LEN) && certificateSecret === undefined) certificateSecret = sdsSecretName(c, c.delimited(cEnd), types, DEPTH.certificateSdsConfig);
        else if (ct === tag(8, LEN) && !validation) validation = combinedValidation(c, c.delimited(cEnd), types);
        else if (ct === tag(1, LEN) && !paramsSeen) {
          paramsSeen = true;
          const pEnd = c.delimited(cEnd);
          while (c.pos < pEnd) {
            const pt = c.tag(pEnd);
            if (pt === tag(1, VARINT)) minVersion = tlsVersionAt(c.uint32(pEnd), 'TLSv1.2') ?? elsewhere();
            else if (pt === tag(2, VARINT)) maxVersion = tlsVersionAt(c.uint32(pEnd), 'TLSv1.2') ?? elsewhere();
            else elsewhere();
          }
        } else elsewhere();
      }
    } else elsewhere();
  }
  const common = { certificateSecret, validationSecret: validation?.validationSecret, matchSans: validation?.matchSans ?? [], alpn, minVersion, maxVersion };
  return { ...common, sni };
}

/** envoy.config.core.v3.TransportSocket: Istio's mTLS context, or a raw buffer (plaintext). */
function transportSocket(c: WireCursor, end: number, types: Types): UpstreamTls | undefined {
  let name = '';
  let typeUrl: string | undefined;
  let tls: UpstreamTls | undefined;
  while (c.pos < end) {
    const t = c.tag(end);
    if (t === tag(1, LEN)) name = c.string(end);
    else if (t === tag(3, LEN) && typeUrl === undefined) {
      const aEnd = c.delimited(end);
      let valueStart = -1, valueEnd = -1;
      typeUrl = '';
      while (c.pos < aEnd) {
        const at = c.tag(aEnd);
        if (at === tag(1, LEN)) typeUrl = c.string(aEnd);
        else if (at === tag(2, LEN) && valueStart < 0) {
          valueEnd = c.delimited(aEnd);
          valueStart = c.pos;
          c.pos = valueEnd;
        } else elsewhere();
      }
      if (typeUrl === UPSTREAM_TLS) {
        c.pos = valueStart < 0 ? aEnd : valueStart;
        tls = upstreamTls(c, valueStart < 0 ? aEnd : valueEnd, types);
        c.pos = aEnd;
      } else if (typeUrl !== RAW_BUFFER || valueStart !== valueEnd) elsewhere();
    } else elsewhere();
  }
  // Without a typed config the general decoder goes by the name: only raw_buffer (or none) is plain here.
  if (typeUrl === undefined && name !== '' && name !== 'envoy.transport_sockets.raw_buffer') elsewhere();
  return tls;
}

/**
 * Cluster.TransportSocketMatch: read once per distinct bytes. Reading Istio's mTLS context was half of
 * reading a cluster (its strings, its SDS config sources parsed for their verdict), for the same bytes
 * each push. A match without a name is named by its place, so the table keeps it nameless.
 */
function socketMatch(c: WireCursor, end: number, index: number, types: Types): TransportSocketMatch {
  const read = readByBytes(types.socketMatches, c, end, (c, end) => socketMatchRead(c, end, types));
  return read.name ? read : { ...read, name: `match-${index}` };
}

function socketMatchRead(c: WireCursor, end: number, types: Types): TransportSocketMatch {
  let name = '';
  let match: Map<string, string> | undefined;
  let tls: UpstreamTls | undefined;
  let socketSeen = false;
  while (c.pos < end) {
    const t = c.tag(end);
    if (t === tag(1, LEN)) name = c.string(end);
    else if (t === tag(2, LEN) && !match) match = stringStruct(c, c.delimited(end));
    else if (t === tag(3, LEN) && !socketSeen) {
      socketSeen = true;
      tls = transportSocket(c, c.delimited(end), types);
    } else elsewhere();
  }
  // The general decoder assigns the keys one by one, and assigning `__proto__` sets nothing.
  if (match?.has('__proto__')) elsewhere();
  return { name, match: Object.fromEntries(match ?? []), tls };
}

/** Cluster.EdsClusterConfig: its service name. */
const edsServiceName = (c: WireCursor, end: number, types: Types): string | undefined =>
  nameBesideSource(c, end, { name: 2, source: 1 }, types, DEPTH.edsConfig) || undefined;

/** The model of one serialized Cluster with the warnings it gives, or undefined when the general decoder must read it. */
export function clusterFromWire(protos: XdsProtos, bytes: Uint8Array): { cluster: Cluster; warnings: string[] } | undefined {
  return directly(() => {
    const types = typesOf(protos);
    const buf = asBuffer(bytes);
    const c = new WireCursor(buf);
    const end = buf.length;
    // Kept apart so that they come in decodeCluster's order, whatever the order on the wire.
    const breakerWarnings: string[] = [], outlierWarnings: string[] = [];
    const seen = new Set<number>(); // singular message fields: a second one would merge
    const once = (field: number) => (seen.has(field) ? elsewhere() : seen.add(field));
    let name = '';
    let type = CLUSTER_TYPES[0]!;
    let lbPolicy = lbPolicyAt(0)!;
    let eds: string | undefined;
    let connectTimeoutMs = DEFAULT_CONNECT_TIMEOUT_MS;
    let circuitBreakers = decodeCircuitBreakers(undefined);
    let outlierDetection: Cluster['outlierDetection'];
    let services: Cluster['istioServices'];
    const transportSocketMatches: TransportSocketMatch[] = [];
    const at = DEPTH.clusterField;
    while (c.pos < end) {
      const t = c.tag(end);
      const field = t >>> 3;
      if (t === tag(1, LEN)) name = c.string(end);
      else if (t === tag(2, VARINT)) type = CLUSTER_TYPES[c.uint32(end)] ?? elsewhere();
      else if (t === tag(6, VARINT)) lbPolicy = lbPolicyAt(c.uint32(end)) ?? elsewhere();
      else if (t === tag(43, LEN)) transportSocketMatches.push(socketMatch(c, c.delimited(end), transportSocketMatches.length, types));
      else if (t === tag(40, LEN)) skipParsed(types.filter, at, c, c.delimited(end));
      else if ((t & 7) !== LEN || !once(field)) elsewhere();
      else if (field === 3) eds = edsServiceName(c, c.delimited(end), types);
      else if (field === 4) connectTimeoutMs = durationMs(c, c.delimited(end));
      else if (field === 10) circuitBreakers = types.breakers.read(c, c.delimited(end), breakerWarnings);
      else if (field === 19) outlierDetection = types.outliers.read(c, c.delimited(end), outlierWarnings);
      else if (field === 25) services = types.istioServices.read(c, c.delimited(end), []);
      else if (field === 27) skipParsed(types.commonLbConfig, at, c, c.delimited(end));
      else if (field === 5 || field === 9) uint32Wrapper(c, c.delimited(end)); // per-connection buffer limit, requests per connection
      else elsewhere();
    }
    if (!name) return elsewhere();
    const cluster = newCluster({
      name,
      type,
      connectTimeoutMs,
      lbPolicy,
      loadAssignment: undefined,
      edsServiceName: eds,
      upstreamBindAddress: undefined,
      transportSocketMatches,
      transportSocket: undefined,
      circuitBreakers,
      outlierDetection,
      healthChecks: [],
      istioServices: services,
      raw: undefined,
    });
    return { cluster, warnings: [...breakerWarnings, ...outlierWarnings] };
  });
}
