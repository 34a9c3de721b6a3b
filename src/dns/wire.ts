/**
 * DNS wire format, by hand where it is hot or where dns-packet cannot say it: reading the one question
 * of a query (and its EDNS size) without building objects, and writing local answers, SERVFAIL, FORMERR
 * and truncated replies straight from the query's bytes. Everything unusual goes through dns-packet.
 */

export const TYPE = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, TXT: 16, AAAA: 28, OPT: 41, TSIG: 250, ANY: 255 } as const;
export const CLASS = { IN: 1, NONE: 254, ANY: 255 } as const;
export const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5, YXDOMAIN: 6, YXRRSET: 7, NXRRSET: 8, NOTAUTH: 9, NOTZONE: 10 } as const;
export const RCODE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(RCODE).map(([k, v]) => [v, k]));
export const TYPE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(Object.entries(TYPE).map(([k, v]) => [v, k]));

const QR = 0x8000;
const AA = 0x0400;
const TC = 0x0200;
const RD = 0x0100;
const RA = 0x0080;

/** Without EDNS a UDP answer may not exceed this (RFC 1035 4.2.1). */
export const CLASSIC_UDP_LIMIT = 512;
/** What we advertise and the most we send over UDP with EDNS: the DNS flag day 2020 size. */
export const EDNS_UDP_SIZE = 1232;

export interface Query {
  readonly id: number;
  readonly flags: number;
  /**
   * The name in wire form as a latin1 string, lower-cased (see nameKey): one slice of the packet instead of
   * a string built label by label. Undefined when a label holds a dot or a non-printable byte.
   */
  readonly key: string | undefined;
  readonly qtype: number;
  readonly qclass: number;
  /** End of the question section: bytes [12, questionEnd) are copied into answers. */
  readonly questionEnd: number;
  /** The client's EDNS UDP payload size, or undefined without an OPT record. */
  readonly ednsSize: number | undefined;
}

export type ParseResult = { ok: true; query: Query } | { ok: false; reason: 'short' | 'response' | 'malformed' | 'unusual' };

/**
 * The common query: QR=0, one question, no answer/authority, at most an OPT in additional. 'short' (no
 * whole header) and 'response' are dropped; 'malformed' gets FORMERR; 'unusual' is left to dns-packet.
 */
export function parseQuery(buf: Buffer): ParseResult {
  if (buf.length < 12) return { ok: false, reason: 'short' };
  const flags = buf.readUInt16BE(2);
  if (flags & QR) return { ok: false, reason: 'response' };
  const qd = buf.readUInt16BE(4);
  const an = buf.readUInt16BE(6);
  const ns = buf.readUInt16BE(8);
  const ar = buf.readUInt16BE(10);
  if (qd !== 1) return { ok: false, reason: qd === 0 ? 'malformed' : 'unusual' };
  if (an !== 0 || ns !== 0 || ar > 1) return { ok: false, reason: 'unusual' };
  let off = 12;
  let printable = true;
  let upper = false;
  for (;;) {
    if (off >= buf.length) return { ok: false, reason: 'malformed' };
    const len = buf[off]!;
    if (len === 0) {
      off++;
      break;
    }
    // A pointer in the first question can only point into the header; longer labels do not exist.
    if (len > 63) return { ok: false, reason: 'malformed' };
    if (off + 1 + len > buf.length) return { ok: false, reason: 'malformed' };
    for (let i = off + 1; i <= off + len; i++) {
      const c = buf[i]!;
      if (c === 0x2e || c <= 0x20 || c >= 0x7f) printable = false;
      else if (c >= 0x41 && c <= 0x5a) upper = true;
    }
    off += 1 + len;
    if (off - 12 > 255) return { ok: false, reason: 'malformed' };
  }
  if (off + 4 > buf.length) return { ok: false, reason: 'malformed' };
  let key: string | undefined;
  if (printable) {
    key = buf.toString('latin1', 12, off);
    // Length bytes are below 0x40: lower-casing the whole string only touches the letters.
    if (upper) key = key.toLowerCase();
  }
  const qtype = buf.readUInt16BE(off);
  const qclass = buf.readUInt16BE(off + 2);
  const questionEnd = off + 4;
  let ednsSize: number | undefined;
  if (ar === 1) {
    // Only a root-owned OPT is handled here (11 fixed bytes + options); anything else (TSIG…) is unusual.
    if (questionEnd + 11 > buf.length || buf[questionEnd] !== 0 || buf.readUInt16BE(questionEnd + 1) !== TYPE.OPT) return { ok: false, reason: 'unusual' };
    const rdlen = buf.readUInt16BE(questionEnd + 9);
    if (questionEnd + 11 + rdlen !== buf.length) return { ok: false, reason: 'malformed' };
    ednsSize = Math.max(CLASSIC_UDP_LIMIT, buf.readUInt16BE(questionEnd + 3));
  } else if (questionEnd !== buf.length) {
    return { ok: false, reason: 'malformed' };
  }
  return { ok: true, query: { id: buf.readUInt16BE(0), flags, key, qtype, qclass, questionEnd, ednsSize } };
}

/** The most a reply to this query may carry: 512 over UDP without EDNS, the client's size (capped) with it. */
export function udpLimit(ednsSize: number | undefined): number {
  return ednsSize === undefined ? CLASSIC_UDP_LIMIT : Math.min(ednsSize, 65535);
}

function header(query: Query | RawQuery, out: Buffer, rcode: number, extra: number): void {
  out.writeUInt16BE(query.id, 0);
  // Opcode and RD come back as they were asked; RA because we forward whatever we do not own.
  out.writeUInt16BE(QR | (query.flags & 0x7800) | (query.flags & RD) | RA | extra | rcode, 2);
}

/** What a reply built without dns-packet needs of its query. */
export interface RawQuery {
  readonly id: number;
  readonly flags: number;
  readonly questionEnd: number;
  readonly ednsSize: number | undefined;
}

/**
 * An authoritative local answer: the question copied, then one A or AAAA record per address (owner name a
 * pointer to the question). Answers that do not fit `limit` are left out and TC is set.
 */
export function localAnswer(req: Buffer, query: Query, addresses: readonly Buffer[], ttl: number, limit: number): Buffer {
  const rrType = query.qtype === TYPE.AAAA ? TYPE.AAAA : TYPE.A;
  const opt = query.ednsSize !== undefined ? 11 : 0;
  const fixed = query.questionEnd + opt;
  let count = addresses.length;
  let size = fixed;
  for (let i = 0; i < addresses.length; i++) {
    const rr = 12 + addresses[i]!.length;
    if (size + rr > limit) {
      count = i;
      break;
    }
    size += rr;
  }
  const out = Buffer.allocUnsafe(size);
  header(query, out, RCODE.NOERROR, AA | (count < addresses.length ? TC : 0));
  out.writeUInt16BE(1, 4);
  out.writeUInt16BE(count, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(opt ? 1 : 0, 10);
  req.copy(out, 12, 12, query.questionEnd);
  let off = query.questionEnd;
  for (let i = 0; i < count; i++) {
    const a = addresses[i]!;
    out.writeUInt16BE(0xc00c, off);
    out.writeUInt16BE(rrType, off + 2);
    out.writeUInt16BE(CLASS.IN, off + 4);
    out.writeUInt32BE(ttl, off + 6);
    out.writeUInt16BE(a.length, off + 10);
    a.copy(out, off + 12);
    off += 12 + a.length;
  }
  if (opt) writeOpt(out, off);
  return out;
}

function writeOpt(out: Buffer, off: number): void {
  out[off] = 0;
  out.writeUInt16BE(TYPE.OPT, off + 1);
  out.writeUInt16BE(EDNS_UDP_SIZE, off + 3);
  out.writeUInt32BE(0, off + 5);
  out.writeUInt16BE(0, off + 9);
}

/** A reply with no records: SERVFAIL, FORMERR, or a truncated stub (TC) the client retries over TCP. */
export function emptyReply(req: Buffer, query: RawQuery, rcode: number, flags = 0): Buffer {
  const opt = query.ednsSize !== undefined ? 11 : 0;
  const out = Buffer.allocUnsafe(query.questionEnd + opt);
  header(query, out, rcode, flags);
  out.writeUInt16BE(query.questionEnd > 12 ? 1 : 0, 4);
  out.writeUInt16BE(0, 6);
  out.writeUInt16BE(0, 8);
  out.writeUInt16BE(opt ? 1 : 0, 10);
  req.copy(out, 12, 12, query.questionEnd);
  if (opt) writeOpt(out, query.questionEnd);
  return out;
}

/** FORMERR for bytes that have a header but no parsable question: the header echoed, nothing else. */
export function formErr(req: Buffer): Buffer {
  return emptyReply(req, { id: req.readUInt16BE(0), flags: req.readUInt16BE(2), questionEnd: 12, ednsSize: undefined }, RCODE.FORMERR);
}

/**
 * An upstream answer too big for the client's UDP limit: header and question only, TC set, as a server
 * does, so the client asks again over TCP. The upstream's own flags and rcode are kept.
 */
export function truncateReply(answer: Buffer, req: Buffer, query: RawQuery): Buffer {
  const out = emptyReply(req, query, 0);
  out.writeUInt16BE(answer.readUInt16BE(2) | TC, 2);
  return out;
}

export const isTruncated = (answer: Buffer): boolean => answer.length >= 4 && (answer.readUInt16BE(2) & TC) !== 0;
export const rcodeOf = (answer: Buffer): number => answer.readUInt16BE(2) & 0xf;

/** The table key of a dotted name: its lower-case wire form as a latin1 string (what parseQuery yields). */
export function nameKey(name: string): string {
  return encodeName(name.toLowerCase()).toString('latin1');
}

/** The dotted name of a table key. */
export function keyName(key: string): string {
  const labels: string[] = [];
  for (let i = 0; i < key.length && key.charCodeAt(i) !== 0; i += 1 + key.charCodeAt(i)) labels.push(key.slice(i + 1, i + 1 + key.charCodeAt(i)));
  return labels.join('.');
}

/** Labels of a name in uncompressed wire form (lower-cased when `canonical`, as TSIG's MAC wants). */
export function encodeName(name: string, canonical = false): Buffer {
  const trimmed = name.replace(/\.$/, '');
  const labels = trimmed === '' ? [] : trimmed.split('.');
  const parts: Buffer[] = [];
  for (const l of labels) {
    const b = Buffer.from(canonical ? l.toLowerCase() : l, 'ascii');
    if (b.length === 0 || b.length > 63) throw new Error(`invalid DNS name "${name}": empty or over-long label`);
    parts.push(Buffer.from([b.length]), b);
  }
  parts.push(Buffer.from([0]));
  const out = Buffer.concat(parts);
  if (out.length > 255) throw new Error(`invalid DNS name "${name}": longer than 255 bytes`);
  return out;
}

/** Skips a (possibly compressed) name at `off`; returns the offset after it, or -1 when it runs off the end. */
export function skipName(buf: Buffer, off: number): number {
  for (;;) {
    if (off >= buf.length) return -1;
    const len = buf[off]!;
    if (len === 0) return off + 1;
    if ((len & 0xc0) === 0xc0) return off + 2 <= buf.length ? off + 2 : -1;
    if (len > 63) return -1;
    off += 1 + len;
  }
}

/** Reads a (possibly compressed) name at `off` as lower-case dotted text. */
export function readName(buf: Buffer, off: number): string {
  const labels: string[] = [];
  let hops = 0;
  for (;;) {
    if (off >= buf.length) throw new Error('name runs past the end of the message');
    const len = buf[off]!;
    if (len === 0) break;
    if ((len & 0xc0) === 0xc0) {
      if (++hops > 32 || off + 1 >= buf.length) throw new Error('bad compression pointer');
      off = ((len & 0x3f) << 8) | buf[off + 1]!;
      continue;
    }
    labels.push(buf.toString('ascii', off + 1, off + 1 + len).toLowerCase());
    off += 1 + len;
  }
  return labels.join('.');
}

export interface RecordRef {
  readonly start: number;
  readonly name: string;
  readonly type: number;
  readonly cls: number;
  readonly ttl: number;
  readonly rdata: number;
  readonly rdlen: number;
  readonly end: number;
}

/** Every resource record of a message with where it lies (sections in order), for TSIG and UPDATE replies. */
export function walkRecords(buf: Buffer): RecordRef[] {
  if (buf.length < 12) throw new Error('shorter than a DNS header');
  let off = 12;
  for (let q = buf.readUInt16BE(4); q > 0; q--) {
    off = skipName(buf, off);
    if (off < 0 || off + 4 > buf.length) throw new Error('truncated question');
    off += 4;
  }
  const total = buf.readUInt16BE(6) + buf.readUInt16BE(8) + buf.readUInt16BE(10);
  const out: RecordRef[] = [];
  for (let i = 0; i < total; i++) {
    const start = off;
    const name = readName(buf, off);
    off = skipName(buf, off);
    if (off < 0 || off + 10 > buf.length) throw new Error('truncated record');
    const rdlen = buf.readUInt16BE(off + 8);
    const ref = { start, name, type: buf.readUInt16BE(off), cls: buf.readUInt16BE(off + 2), ttl: buf.readUInt32BE(off + 4), rdata: off + 10, rdlen, end: off + 10 + rdlen };
    if (ref.end > buf.length) throw new Error('truncated record data');
    out.push(ref);
    off = ref.end;
  }
  return out;
}
