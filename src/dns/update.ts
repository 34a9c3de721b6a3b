/**
 * RFC 2136 DNS UPDATE messages, written by hand: dns-packet cannot encode the empty-rdata records of the
 * CLASS ANY / CLASS NONE forms that say "delete this RRset" or "this RRset must not exist". Sent signed
 * (TSIG) over TCP; the result is the rcode, or the TSIG error when the server rejected the signature.
 */
import { crypto } from '../sys/builtins.js';
import { tcpExchange } from './forward.js';
import type { Upstream } from './resolv.js';
import { ipToBuffer } from './table.js';
import { sign, type TsigKey, TSIG_ERRORS, verifyResponse } from './tsig.js';
import { CLASS, encodeName, RCODE_NAMES, TYPE } from './wire.js';

export interface UpdateRecord {
  readonly name: string;
  readonly type: number;
  readonly cls: number;
  readonly ttl: number;
  readonly rdata: Buffer;
}

const EMPTY = Buffer.alloc(0);

/** Update section forms (RFC 2136 2.5) and prerequisite forms (2.4). */
export const rr = {
  add: (name: string, type: number, ttl: number, rdata: Buffer): UpdateRecord => ({ name, type, cls: CLASS.IN, ttl, rdata }),
  deleteRRset: (name: string, type: number): UpdateRecord => ({ name, type, cls: CLASS.ANY, ttl: 0, rdata: EMPTY }),
  deleteRR: (name: string, type: number, rdata: Buffer): UpdateRecord => ({ name, type, cls: CLASS.NONE, ttl: 0, rdata }),
  rrsetAbsent: (name: string, type: number): UpdateRecord => ({ name, type, cls: CLASS.NONE, ttl: 0, rdata: EMPTY }),
};

export function addressRdata(ip: string): { type: number; rdata: Buffer } {
  const b = ipToBuffer(ip);
  if (!b) throw new Error(`not an IP address: "${ip}"`);
  return { type: b.length === 4 ? TYPE.A : TYPE.AAAA, rdata: b };
}

export function txtRdata(text: string): Buffer {
  const b = Buffer.from(text, 'utf8');
  if (b.length > 255) throw new Error('TXT string longer than 255 bytes');
  return Buffer.concat([Buffer.from([b.length]), b]);
}

export function buildUpdate(id: number, zone: string, prerequisites: readonly UpdateRecord[], updates: readonly UpdateRecord[]): Buffer {
  const head = Buffer.alloc(12);
  head.writeUInt16BE(id, 0);
  head.writeUInt16BE(5 << 11, 2); // opcode UPDATE
  head.writeUInt16BE(1, 4); // ZOCOUNT
  head.writeUInt16BE(prerequisites.length, 6);
  head.writeUInt16BE(updates.length, 8);
  const zoneSection = Buffer.concat([encodeName(zone), Buffer.from([0, TYPE.SOA, 0, CLASS.IN])]);
  const records = [...prerequisites, ...updates].map((r) => {
    const fixed = Buffer.alloc(10);
    fixed.writeUInt16BE(r.type, 0);
    fixed.writeUInt16BE(r.cls, 2);
    fixed.writeUInt32BE(r.ttl, 4);
    fixed.writeUInt16BE(r.rdata.length, 8);
    return Buffer.concat([encodeName(r.name), fixed, r.rdata]);
  });
  return Buffer.concat([head, zoneSection, ...records]);
}

export interface UpdateResult {
  /** NOERROR, REFUSED, NOTAUTH, YXRRSET…, BADSIG/BADKEY/BADTIME (the TSIG error), or 'timeout'/'error'. */
  readonly result: string;
  readonly rcode?: number;
  /** Whether the response carried a valid signature with our key. */
  readonly signature?: string;
  readonly detail?: string;
}

export async function sendUpdate(server: Upstream, zone: string, key: TsigKey, prerequisites: readonly UpdateRecord[], updates: readonly UpdateRecord[], timeoutMs: number): Promise<UpdateResult> {
  const signed = sign(buildUpdate(crypto().randomInt(0, 65536), zone, prerequisites, updates), key);
  let resp: Buffer;
  try {
    resp = await tcpExchange(server, signed.message, timeoutMs);
  } catch (e) {
    const reason = (e as { reason?: string }).reason;
    return { result: reason === 'timeout' ? 'timeout' : 'error', detail: (e as Error).message };
  }
  const rcode = resp.readUInt16BE(2) & 0xf;
  const check = verifyResponse(resp, key, signed.mac);
  if (check.tsigError !== 0) return { result: TSIG_ERRORS[check.tsigError] ?? `TSIG error ${check.tsigError}`, rcode, signature: check.signature };
  // A success that is not signed by the server with our key may be forged: not trusted.
  if (rcode === 0 && check.signature !== 'ok') return { result: 'BADSIG', rcode, signature: check.signature, detail: 'response signature does not verify' };
  return { result: RCODE_NAMES[rcode] ?? `RCODE ${rcode}`, rcode, signature: check.signature };
}
