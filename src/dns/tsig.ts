/**
 * TSIG (RFC 8945): HMAC signatures on DNS messages with a shared key, written with node:crypto, and the
 * key file BIND's tsig-keygen writes: `key "NAME" { algorithm hmac-sha256; secret "BASE64"; };`.
 */
import { crypto } from '../sys/builtins.js';
import { readFileSync } from 'node:fs';
import { CLASS, encodeName, TYPE, walkRecords } from './wire.js';

export interface TsigKey {
  readonly name: string;
  /** As in the key file and on the wire, e.g. hmac-sha256. */
  readonly algorithm: string;
  readonly secret: Buffer;
}

const HASHES: Readonly<Record<string, string>> = {
  'hmac-sha1': 'sha1',
  'hmac-sha224': 'sha224',
  'hmac-sha256': 'sha256',
  'hmac-sha384': 'sha384',
  'hmac-sha512': 'sha512',
};

/** TSIG's own error codes (RFC 8945 section 3), as they appear in the TSIG record's error field. */
export const TSIG_ERRORS: Readonly<Record<number, string>> = { 16: 'BADSIG', 17: 'BADKEY', 18: 'BADTIME', 22: 'BADTRUNC' };

/** The first key of a BIND key file; errors name the file and what is wrong. */
export function parseKeyFile(text: string, source: string): TsigKey {
  // Comments are dropped only outside quoted strings: a base64 secret may well contain "//".
  const body = text.replace(/("[^"]*")|\/\*[\s\S]*?\*\/|(?:#|\/\/)[^\n]*/g, (_all, quoted: string | undefined) => quoted ?? '');
  const m = /key\s+"?([^"\s{]+)"?\s*\{([\s\S]*?)\}\s*;/.exec(body);
  if (!m) throw new Error(`${source}: no key statement (expected key "NAME" { algorithm hmac-sha256; secret "BASE64"; };)`);
  const algorithm = /algorithm\s+"?([\w.-]+)"?\s*;/.exec(m[2]!)?.[1]?.toLowerCase().replace(/\.$/, '');
  const secret = /secret\s+"([^"]+)"\s*;/.exec(m[2]!)?.[1];
  if (!algorithm) throw new Error(`${source}: key "${m[1]}" has no algorithm`);
  if (!HASHES[algorithm]) throw new Error(`${source}: key "${m[1]}": algorithm ${algorithm} is not supported (use ${Object.keys(HASHES).join(', ')})`);
  if (!secret || !/^[A-Za-z0-9+/=\s]+$/.test(secret)) throw new Error(`${source}: key "${m[1]}" has no base64 secret`);
  const key = Buffer.from(secret.replace(/\s+/g, ''), 'base64');
  if (key.length === 0) throw new Error(`${source}: key "${m[1]}" has an empty secret`);
  return { name: m[1]!.toLowerCase().replace(/\.$/, ''), algorithm, secret: key };
}

export function loadKeyFile(path: string): TsigKey {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`${path}: cannot read the TSIG key file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseKeyFile(text, path);
}

function u48(seconds: number): Buffer {
  const b = Buffer.alloc(6);
  b.writeUInt16BE(Math.floor(seconds / 2 ** 32), 0);
  b.writeUInt32BE(seconds % 2 ** 32, 2);
  return b;
}

const u16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
};

/** The "TSIG variables" of the MAC (RFC 8945 4.3.3): names canonical, no MAC, no original id. */
function variables(key: TsigKey, timeSigned: number, fudge: number, error: number, other: Buffer): Buffer {
  return Buffer.concat([encodeName(key.name, true), u16(CLASS.ANY), Buffer.alloc(4), encodeName(key.algorithm, true), u48(timeSigned), u16(fudge), u16(error), u16(other.length), other]);
}

function hmac(key: TsigKey, ...parts: Buffer[]): Buffer {
  const h = crypto().createHmac(HASHES[key.algorithm]!, key.secret);
  for (const p of parts) h.update(p);
  return h.digest();
}

export interface Signed {
  readonly message: Buffer;
  /** The request MAC, needed to check the response's. */
  readonly mac: Buffer;
}

/** Appends a TSIG record to a complete message (the last record, ARCOUNT + 1). */
export function sign(message: Buffer, key: TsigKey, nowMs = Date.now(), fudge = 300): Signed {
  const timeSigned = Math.floor(nowMs / 1000);
  const mac = hmac(key, message, variables(key, timeSigned, fudge, 0, Buffer.alloc(0)));
  const rdata = Buffer.concat([encodeName(key.algorithm), u48(timeSigned), u16(fudge), u16(mac.length), mac, message.subarray(0, 2), u16(0), u16(0)]);
  const rr = Buffer.alloc(10);
  rr.writeUInt16BE(TYPE.TSIG, 0);
  rr.writeUInt16BE(CLASS.ANY, 2);
  rr.writeUInt32BE(0, 4);
  rr.writeUInt16BE(rdata.length, 8);
  const out = Buffer.concat([message, encodeName(key.name), rr, rdata]);
  out.writeUInt16BE(message.readUInt16BE(10) + 1, 10);
  return { message: out, mac };
}

export interface ResponseCheck {
  /** 'ok', 'unsigned' (no TSIG record: servers answer BADKEY and some errors unsigned), or why it is bad. */
  readonly signature: 'ok' | 'unsigned' | 'bad-mac' | 'wrong-key' | 'malformed';
  /** The TSIG record's error field: 0, or BADSIG/BADKEY/BADTIME/BADTRUNC. */
  readonly tsigError: number;
}

/** Checks a response's TSIG against the request MAC (RFC 8945 4.3.4). */
export function verifyResponse(resp: Buffer, key: TsigKey, requestMac: Buffer): ResponseCheck {
  let records;
  try {
    records = walkRecords(resp);
  } catch {
    return { signature: 'malformed', tsigError: 0 };
  }
  const last = records[records.length - 1];
  if (!last || last.type !== TYPE.TSIG || resp.readUInt16BE(10) === 0) return { signature: 'unsigned', tsigError: 0 };
  try {
    let off = last.rdata;
    off = skipPlainName(resp, off);
    const timeSigned = resp.readUInt16BE(off) * 2 ** 32 + resp.readUInt32BE(off + 2);
    const fudge = resp.readUInt16BE(off + 6);
    const macLen = resp.readUInt16BE(off + 8);
    const mac = resp.subarray(off + 10, off + 10 + macLen);
    off += 10 + macLen;
    const originalId = resp.readUInt16BE(off);
    const error = resp.readUInt16BE(off + 2);
    const otherLen = resp.readUInt16BE(off + 4);
    const other = resp.subarray(off + 6, off + 6 + otherLen);
    if (last.name !== key.name) return { signature: 'wrong-key', tsigError: error };
    if (macLen === 0) return { signature: 'unsigned', tsigError: error };
    const body = Buffer.from(resp.subarray(0, last.start));
    body.writeUInt16BE(originalId, 0);
    body.writeUInt16BE(resp.readUInt16BE(10) - 1, 10);
    const want = hmac(key, u16(requestMac.length), requestMac, body, variables(key, timeSigned, fudge, error, other));
    const ok = want.length === mac.length && crypto().timingSafeEqual(want, mac);
    return { signature: ok ? 'ok' : 'bad-mac', tsigError: error };
  } catch {
    return { signature: 'malformed', tsigError: 0 };
  }
}

/** The algorithm name in TSIG rdata is never compressed; returns the offset after it. */
function skipPlainName(buf: Buffer, off: number): number {
  for (;;) {
    const len = buf[off];
    if (len === undefined || len > 63) throw new Error('bad algorithm name');
    if (len === 0) return off + 1;
    off += 1 + len;
  }
}
