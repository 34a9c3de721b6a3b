/**
 * Istio's ClusterLoadAssignments read straight from their bytes into the model. EDS is most of a mesh's
 * config by count (a CLA per cluster, every endpoint with its metadata), and the general way (bytes to
 * proto3 JSON, then a path-tracking reader over it) made two trees of objects per endpoint only to keep
 * seven fields. On the 1,000-service mesh of bench/xds-scale.ts (2,000 CLAs, 10,000 endpoints) decoding a
 * full EDS response took 75 ms, 25 scavenges among them; read here, 28 ms and 9 (Node 20, warm, the
 * young generation held as the sidecar holds it).
 *
 * Only the shape istiod sends is read here: socket addresses, health, weights, priority, locality, the
 * `istio` and `envoy.transport_socket_match` filter metadata with string values, the policy's
 * overprovisioning factor. Anything else (another field, a field sent twice that would merge, a value the
 * model refuses or warns about, bytes that do not parse) gives undefined, and the resource goes the general
 * way, which accepts it or says what is wrong. So what is read here is what the general way would make of
 * the same bytes (test/xds/cla-wire.test.ts compares the two on fixtures and on corrupted copies).
 */
import { isIP } from 'node:net';
import { newEndpoint, sharedSocketMatch } from '../config/cluster.js';
import { SharedTable } from '../config/shared-table.js';
import { type ClusterLoadAssignment, type Endpoint, HEALTH_STATUSES } from '../config/model.js';
import { asBuffer, WireCursor } from './wire-json.js';
import { directly, elsewhere, LEN, readByBytes, stringStruct, tag, uint32Wrapper, VARINT } from './wire-model.js';

interface EndpointMetadata {
  readonly transportSocketMatch: Readonly<Record<string, string>> | undefined;
  readonly workload: string | undefined;
}

/** envoy.config.core.v3.Metadata: the two filter_metadata entries Istio puts on an endpoint. */
function readMetadata(c: WireCursor, end: number): EndpointMetadata {
  let match: Map<string, string> | undefined;
  let istio: Map<string, string> | undefined;
  while (c.pos < end) {
    if (c.tag(end) !== tag(1, LEN)) elsewhere();
    const entryEnd = c.delimited(end);
    let key = '';
    let struct: Map<string, string> | undefined;
    while (c.pos < entryEnd) {
      const t = c.tag(entryEnd);
      if (t === tag(1, LEN)) key = c.string(entryEnd);
      else if (t === tag(2, LEN) && !struct) struct = stringStruct(c, c.delimited(entryEnd));
      else elsewhere();
    }
    // A map's last entry for a key wins.
    if (key === 'envoy.transport_socket_match') match = struct ?? new Map();
    else if (key === 'istio') istio = struct ?? new Map();
    else elsewhere();
  }
  return Object.freeze({ transportSocketMatch: match && sharedSocketMatch(Object.fromEntries(match)), workload: istio?.get('workload') });
}

/**
 * Metadata by its bytes: every pod of a workload carries the same bytes (its workload label, `tlsMode`),
 * so a mesh's 10,000 endpoints have a few hundred distinct ones, read once each; the strings they give
 * are then shared too. At most 4,096 of up to 1 KiB each.
 */
const metadataByBytes = new SharedTable<EndpointMetadata>(4096, 1024);

const metadata = (c: WireCursor, end: number): EndpointMetadata => readByBytes(metadataByBytes, c, end, readMetadata);

/** envoy.config.core.v3.Address with a SocketAddress holding an IP and a port. */
function socketAddress(c: WireCursor, end: number): { address: string; port: number } {
  if (c.tag(end) !== tag(1, LEN)) elsewhere();
  const saEnd = c.delimited(end);
  if (saEnd !== end) elsewhere(); // another field, or socket_address twice
  let address = '';
  let port = 0;
  while (c.pos < saEnd) {
    const t = c.tag(saEnd);
    if (t === tag(2, LEN)) address = c.string(saEnd);
    else if (t === tag(3, VARINT)) port = c.uint32(saEnd);
    else elsewhere();
  }
  if (isIP(address) === 0 || port === 0 || port > 65535) elsewhere();
  return { address, port };
}

/** envoy.config.endpoint.v3.Endpoint: its address; an empty health_check_config and a hostname are read past. */
function endpointAddress(c: WireCursor, end: number): { address: string; port: number } {
  let addr: { address: string; port: number } | undefined;
  let healthCheckSeen = false;
  while (c.pos < end) {
    const t = c.tag(end);
    if (t === tag(1, LEN) && !addr) addr = socketAddress(c, c.delimited(end));
    else if (t === tag(2, LEN) && !healthCheckSeen) {
      healthCheckSeen = true;
      if (c.delimited(end) !== c.pos) elsewhere();
    } else if (t === tag(3, LEN)) c.string(end);
    else elsewhere();
  }
  return addr ?? elsewhere();
}

/** envoy.config.endpoint.v3.LbEndpoint. */
function lbEndpoint(c: WireCursor, end: number, priority: number): Endpoint {
  let addr: { address: string; port: number } | undefined;
  let health = 0;
  let md: EndpointMetadata | undefined;
  let weight: number | undefined;
  while (c.pos < end) {
    const t = c.tag(end);
    if (t === tag(1, LEN) && !addr) addr = endpointAddress(c, c.delimited(end));
    else if (t === tag(2, VARINT)) health = c.uint32(end) | 0;
    else if (t === tag(3, LEN) && !md) md = metadata(c, c.delimited(end));
    else if (t === tag(4, LEN) && weight === undefined) weight = uint32Wrapper(c, c.delimited(end));
    else elsewhere();
  }
  const status = HEALTH_STATUSES[health];
  if (!addr || status === undefined || weight === 0) elsewhere();
  return newEndpoint(addr.address, addr.port, weight ?? 1, status, priority, md?.transportSocketMatch, md?.workload);
}

/** envoy.config.core.v3.Locality: three strings, read only to check them. */
function locality(c: WireCursor, end: number): void {
  while (c.pos < end) {
    const t = c.tag(end);
    if (t === tag(1, LEN) || t === tag(2, LEN) || t === tag(3, LEN)) c.string(end);
    else elsewhere();
  }
}

/**
 * envoy.config.endpoint.v3.LocalityLbEndpoints. Its priority follows its endpoints on the wire (field 5
 * after 2), so the endpoints' places are noted in a first pass and read once the priority is known.
 */
function localityEndpoints(c: WireCursor, end: number, out: Endpoint[]): void {
  const spans: number[] = [];
  let priority = 0;
  let localitySeen = false, weightSeen = false, proximitySeen = false;
  while (c.pos < end) {
    const t = c.tag(end);
    if (t === tag(2, LEN)) {
      const e = c.delimited(end);
      spans.push(c.pos, e);
      c.pos = e;
    } else if (t === tag(5, VARINT)) priority = c.uint32(end);
    else if (t === tag(1, LEN) && !localitySeen) {
      localitySeen = true;
      locality(c, c.delimited(end));
    } else if (t === tag(3, LEN) && !weightSeen) {
      weightSeen = true;
      uint32Wrapper(c, c.delimited(end));
    } else if (t === tag(6, LEN) && !proximitySeen) {
      proximitySeen = true;
      uint32Wrapper(c, c.delimited(end));
    } else elsewhere();
  }
  if (priority > 127) elsewhere();
  for (let i = 0; i < spans.length; i += 2) {
    c.pos = spans[i]!;
    out.push(lbEndpoint(c, spans[i + 1]!, priority));
  }
  c.pos = end;
}

/** ClusterLoadAssignment.Policy with only an overprovisioning factor. */
function policy(c: WireCursor, end: number): void {
  let seen = false;
  while (c.pos < end) {
    if (c.tag(end) !== tag(3, LEN) || seen) elsewhere();
    seen = true;
    uint32Wrapper(c, c.delimited(end));
  }
}

/** The model of one serialized ClusterLoadAssignment, or undefined when the general decoder must read it. */
export function claFromWire(bytes: Uint8Array): ClusterLoadAssignment | undefined {
  return directly(() => {
    const buf = asBuffer(bytes);
    const c = new WireCursor(buf);
    const end = buf.length;
    let clusterName = '';
    let policySeen = false;
    const endpoints: Endpoint[] = [];
    while (c.pos < end) {
      const t = c.tag(end);
      if (t === tag(1, LEN)) clusterName = c.string(end);
      else if (t === tag(2, LEN)) localityEndpoints(c, c.delimited(end), endpoints);
      else if (t === tag(4, LEN) && !policySeen) {
        policySeen = true;
        policy(c, c.delimited(end));
      } else elsewhere();
    }
    return clusterName ? { clusterName, endpoints, raw: undefined } : undefined;
  });
}
