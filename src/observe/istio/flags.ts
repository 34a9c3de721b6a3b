/**
 * Envoy's response flags as a bitset (one small integer per request, OR-ed together by whoever knows
 * something happened), and the table that turns a local reply's ErrorKind into what Envoy would have
 * reported for it: the HTTP code, the flag, and the gRPC status.
 */

/** Envoy's response flags, one bit each; rendered in this order, joined by ',' (Envoy's own format). */
export const ResponseFlag = {
  /** No route matched. */
  NR: 1 << 0,
  /** No healthy upstream host. */
  UH: 1 << 1,
  /** Upstream connection failure. */
  UF: 1 << 2,
  /** Upstream overflow (circuit breaker). */
  UO: 1 << 3,
  /** Upstream request timeout. */
  UT: 1 << 4,
  /** Upstream retry limit exceeded. */
  URX: 1 << 5,
  /** Upstream connection termination (reset with the request in flight). */
  UC: 1 << 6,
  /** Downstream connection termination: the caller left before its answer. */
  DC: 1 << 7,
  /** Request aborted by fault injection. */
  FI: 1 << 8,
  /** Request delayed by fault injection. */
  DI: 1 << 9,
  /** Rate limited locally. */
  RL: 1 << 10,
  /** Downstream protocol error (a malformed frame). */
  DPE: 1 << 11,
  /** Upstream protocol error. */
  UPE: 1 << 12,
  /** No cluster found (tcp_proxy naming a cluster that does not exist). */
  NC: 1 << 13,
} as const;

export type ResponseFlagName = keyof typeof ResponseFlag;
const NAMES = Object.keys(ResponseFlag) as ResponseFlagName[];

/** `-` for none, else Envoy's short names joined by ','; memoised (a few dozen combinations at most). */
const rendered = new Map<number, string>();
export function flagsString(flags: number): string {
  let s = rendered.get(flags);
  if (s === undefined) {
    s = NAMES.filter((n) => (flags & ResponseFlag[n]) !== 0).join(',') || '-';
    rendered.set(flags, s);
  }
  return s;
}

/** The engine's reasons for answering a request itself (protocols/codec.ts ErrorKind, kept by name). */
export type LocalReplyKind = 'no-route' | 'no-healthy-upstream' | 'connect-failure' | 'upstream-reset' | 'timeout' | 'overflow' | 'frame-too-large' | 'codec-error';

export interface LocalReply {
  /** The HTTP status Envoy would send for it. */
  readonly code: number;
  readonly flag: number;
  readonly grpc: number;
}

/**
 * A local reply as Envoy reports it. codec-error is what the engine answers when a frame cannot be
 * forwarded as read (a downstream protocol error): Envoy's 400 with DPE.
 */
export const LOCAL_REPLIES: Readonly<Record<LocalReplyKind, LocalReply>> = {
  'no-route': { code: 404, flag: ResponseFlag.NR, grpc: 12 },
  'no-healthy-upstream': { code: 503, flag: ResponseFlag.UH, grpc: 14 },
  'connect-failure': { code: 503, flag: ResponseFlag.UF, grpc: 14 },
  'upstream-reset': { code: 503, flag: ResponseFlag.UC, grpc: 14 },
  timeout: { code: 504, flag: ResponseFlag.UT, grpc: 4 },
  overflow: { code: 503, flag: ResponseFlag.UO, grpc: 8 },
  'frame-too-large': { code: 413, flag: 0, grpc: 3 },
  'codec-error': { code: 400, flag: ResponseFlag.DPE, grpc: 13 },
};

/**
 * The HTTP code of a local reply once the extra flags are known: a rate-limited request is Envoy's 429
 * whatever the engine answered natively; a fault abort keeps its kind's code unless `abortCode` says.
 */
export function localCode(kind: LocalReplyKind, flags: number): number {
  if ((flags & ResponseFlag.RL) !== 0) return 429;
  return LOCAL_REPLIES[kind].code;
}
