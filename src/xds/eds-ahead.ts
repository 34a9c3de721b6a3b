/**
 * The EDS names a CDS response will need, read before the response is decoded, so the EDS request can
 * go out first and istiod builds the endpoints while we decode the clusters. On a 1,000-service mesh the
 * clusters take longer to decode than istiod takes to answer, so the endpoints are waiting when we are
 * done instead of being asked for then (bench/xds-scale.ts: first response → ready).
 *
 * Only a hint: the names asked for after the response is accepted or rejected are the ones that count
 * (engine.wantedNames), so a name read here for a cluster that is then rejected is dropped again, and a
 * resource this scan cannot read is simply left to the decoder. It reads three fields of each Cluster
 * and skips everything else by its wire type, without building anything.
 */

/** envoy.config.cluster.v3.Cluster and EdsClusterConfig field numbers. */
const NAME = 1, TYPE = 2, EDS_CLUSTER_CONFIG = 3, CLUSTER_TYPE = 38;
const SERVICE_NAME = 2;
/** Cluster.DiscoveryType.EDS. */
const EDS = 3;

/** Reads as the decoder (wire-json.ts) reads: tags, lengths and enums are a varint's low 32 bits. */
class Scan {
  pos: number;
  constructor(readonly buf: Uint8Array, start: number, readonly end: number) {
    this.pos = start;
  }

  /** A varint's low 32 bits, unsigned. */
  uint32(): number {
    let value = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw new RangeError('truncated');
      const b = this.buf[this.pos++]!;
      if (i < 5) value |= (b & 0x7f) << (7 * i);
      if (b < 0x80) return value >>> 0;
    }
    throw new RangeError('varint too long');
  }

  /** The [start, end) of a length-delimited value. */
  delimited(): [number, number] {
    const len = this.uint32();
    const start = this.pos;
    if (len > this.end - start) throw new RangeError('truncated');
    this.pos = start + len;
    return [start, this.pos];
  }

  skip(wireType: number, depth = 0): void {
    if (wireType === 0) this.uint32();
    else if (wireType === 1) this.pos += 8;
    else if (wireType === 2) this.delimited();
    else if (wireType === 3) {
      // a proto2 group, never in xDS: skipped to its end tag, as the decoder does
      if (depth > 100) throw new RangeError('too deep');
      for (let tag = this.uint32(); (tag & 7) !== 4; tag = this.uint32()) this.skip(tag & 7, depth + 1);
    } else if (wireType === 5) this.pos += 4;
    else throw new RangeError(`wire type ${wireType}`);
    if (this.pos > this.end) throw new RangeError('truncated');
  }
}

const utf8 = new TextDecoder();

function serviceNameOf(buf: Uint8Array, start: number, end: number, current: string): string {
  const s = new Scan(buf, start, end);
  let name = current; // a message sent twice merges: a later one without the field keeps the earlier value
  while (s.pos < s.end) {
    const tag = s.uint32();
    if (tag === (SERVICE_NAME << 3) + 2) name = utf8.decode(buf.subarray(...s.delimited()));
    else s.skip(tag & 7);
  }
  return name;
}

/** The EDS name of one serialized Cluster, or undefined when it is not an EDS cluster (or not readable). */
export function edsNameAhead(bytes: Uint8Array): string | undefined {
  try {
    const s = new Scan(bytes, 0, bytes.length);
    let name = '', type = 0, custom = false, service = '';
    while (s.pos < s.end) {
      const tag = s.uint32();
      const field = tag >>> 3, wire = tag & 7;
      // type and cluster_type are one oneof: the last on the wire wins. A field of another wire type is
      // skipped, as the decoder skips it.
      if (field === NAME && wire === 2) name = utf8.decode(bytes.subarray(...s.delimited()));
      else if (field === TYPE && wire === 0) {
        type = s.uint32() | 0;
        custom = false;
      } else if (field === CLUSTER_TYPE && wire === 2) {
        s.delimited();
        custom = true;
      } else if (field === EDS_CLUSTER_CONFIG && wire === 2) service = serviceNameOf(bytes, ...s.delimited(), service);
      else s.skip(wire);
    }
    if (custom || type !== EDS || !name) return undefined;
    return service || name;
  } catch {
    return undefined;
  }
}

/** The EDS names of a CDS response's clusters, as far as they can be read without decoding. */
export function edsNamesAhead(clusters: readonly { readonly value: Uint8Array }[]): string[] {
  const names: string[] = [];
  for (const c of clusters) {
    const n = edsNameAhead(c.value);
    if (n !== undefined) names.push(n);
  }
  return names;
}
