/**
 * The codec contract. A codec reads only what routing needs from a frame's header and never parses the
 * body: the engine forwards `raw` exactly as it arrived, after patching the request id in place.
 * This file is the only thing protocols/ shares with src/.
 */

export type FrameKind = 'request' | 'oneway' | 'response';

export type MatchResult = 'yes' | 'no' | 'need-more';

/** Why the engine answers a request itself; each codec maps these to its protocol's own status codes. */
export type ErrorKind =
  | 'no-route'
  | 'no-healthy-upstream'
  | 'connect-failure'
  | 'upstream-reset'
  | 'timeout'
  | 'overflow'
  | 'frame-too-large'
  | 'codec-error';

export type RequestId = number | bigint;

export interface Frame {
  /** Exactly this frame's bytes: a view into the read buffer, never a copy. */
  readonly raw: Buffer;
  readonly kind: FrameKind;
  /** Heartbeats travel as requests (answered locally) and responses (to our keepalives). */
  readonly heartbeat: boolean;
  readonly requestId: RequestId;
  /** The caller's own deadline when the protocol carries one, in milliseconds. */
  readonly timeoutMs: number | undefined;
  /** Protocol-native status of a response; undefined for requests. */
  readonly status: number | undefined;
  /** True when `status` means success. */
  readonly ok: boolean;
  /**
   * Routing headers, read lazily: `service`, `method`, `version`, `group`, and any other header the
   * protocol carries, by name. Undefined when absent.
   */
  header(name: string): string | undefined;
}

export const NEED_MORE = Symbol('need-more');
export type NeedMore = typeof NEED_MORE;

export class CodecError extends Error {
  /**
   * `request` is set when enough of the header was read to answer the caller natively (for instance a
   * request whose declared length is over the limit): the engine replies, then closes.
   */
  constructor(
    message: string,
    readonly reason: 'malformed' | 'too-large',
    readonly request?: Frame,
  ) {
    super(message);
    this.name = 'CodecError';
  }
}

/**
 * gRPC status codes: the engine reports every RPC outcome in gRPC's terms (what Istio's dashboards and
 * Kiali draw for RPC) and retry policies name them (`retry_on: unavailable,resource-exhausted`).
 */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
} as const;

export interface Codec {
  readonly name: string;
  /** multiplex: many requests in flight per connection, matched by id. pingpong: one at a time. */
  readonly poolMode: 'multiplex' | 'pingpong';
  /** Looks at the first bytes of a connection. */
  match(head: Buffer): MatchResult;
  /**
   * Decodes the frame at the start of `buf`. Returns NEED_MORE until the whole frame is there, or a
   * CodecError (never throws). A declared length above `maxFrameBytes` is a 'too-large' error.
   */
  decode(buf: Buffer, maxFrameBytes: number): Frame | NeedMore | CodecError;
  /**
   * Optional: the whole length the frame at the start of `buf` declares, once enough of its header is
   * there, else -1. Asked only of bytes decode has answered NEED_MORE for; a large frame arriving in many
   * reads then grows by fours up to its size and ends in a buffer of exactly that size, rather than in a
   * doubling series, whose superseded halves are garbage until the next collection.
   */
  frameLength?(buf: Buffer): number;
  /** Patches the request id inside `raw` in place. */
  setRequestId(raw: Buffer, id: RequestId): void;
  /** The local answer to a heartbeat request. */
  heartbeatReply(request: Frame): Buffer;
  /** A heartbeat request to keep an idle upstream connection alive. */
  keepalive(id: RequestId): Buffer;
  /** A protocol-native error response to `request`; null when the protocol cannot answer it (oneway). */
  errorResponse(request: Frame, kind: ErrorKind, message: string): Buffer | null;
  /** A response's status as the gRPC status it means (see each codec's README table). */
  grpcStatus(response: Frame): number;
}
