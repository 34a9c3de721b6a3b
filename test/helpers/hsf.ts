/**
 * An HSF frame encoder for tests, written from the layout in protocols/hsf/README.md (issue 7) and
 * independent of the codec, for the frames the one real capture does not cover.
 */

/** A hessian2 string in its compact forms (enough for test names). */
export const hstr = (s: string): Buffer =>
  Buffer.concat([Buffer.from(s.length < 32 ? [s.length] : [0x30 + (s.length >> 8), s.length & 0xff]), Buffer.from(s, 'utf8')]);

/** An untyped hessian2 map of strings. */
export const hmap = (m: Record<string, string>): Buffer =>
  Buffer.concat([Buffer.from('H'), ...Object.entries(m).flatMap(([k, v]) => [hstr(k), hstr(v)]), Buffer.from('Z')]);

export interface HsfRequest {
  id?: bigint;
  timeout?: number;
  serialization?: number;
  ext?: number[];
  service?: string;
  method?: string;
  types?: string[];
  args?: Buffer[];
  props?: Buffer;
}

export const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};
const u64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(n);
  return b;
};

export function hsfRequest(r: HsfRequest = {}): Buffer {
  const service = Buffer.from(r.service ?? 'com.acme.Greeter:2.0');
  const method = Buffer.from(r.method ?? 'greet');
  const types = (r.types ?? ['java.lang.String']).map((s) => Buffer.from(s));
  const args = r.args ?? types.map(() => hstr('hi'));
  const props = r.props ?? hmap({ target_group: 'blue', zone: 'gz' });
  return Buffer.concat([
    Buffer.from([0x0e, 1, 0, r.serialization ?? 4, ...(r.ext ?? [0, 0, 3])]),
    u64(r.id ?? 1n), u32(r.timeout ?? 0), u32(service.length), u32(method.length), u32(types.length),
    ...types.map((x) => u32(x.length)), ...args.map((x) => u32(x.length)), u32(props.length),
    service, method, ...types, ...args, props,
  ]);
}

export function hsfResponse(id: bigint, status: number, body: Buffer, serialization = 4): Buffer {
  return Buffer.concat([Buffer.from([0x0e, 1, 1, status, serialization, 0, 0, 0]), u64(id), u32(body.length), body]);
}

export function hsfHeartbeat(id: bigint, type = 0, timeout = 0): Buffer {
  return Buffer.concat([Buffer.from([0x0c, type, 1, 0, 0, 0]), u64(id), u32(timeout)]);
}
