/**
 * HSF 2.x wire constants, all big-endian. HSF has no public specification: this is the layout of the only
 * public evidence (see README.md), and the parts marked unverified are our own choices.
 *
 * request   magic 0x0e | version | type 0 | serialization | ext ×3 | id u64 @7 | timeout u32 @15 |
 *           service-name length u32 @19 | method-name length u32 @23 | argument count N u32 @27 |
 *           N argument-type lengths u32 | N argument lengths u32 | properties length u32; header 35 + 8N
 * response  magic 0x0e | version | type 1 | status | serialization | ext ×3 | id u64 @8 | body length u32 @16
 * heartbeat magic 0x0c | type | version | ext ×3 | id u64 @6 | timeout u32 @14; 18 bytes, no body
 */
export const MAGIC = 0x0e;
export const HEARTBEAT_MAGIC = 0x0c;
export const VERSION = 1;

export const TYPE_REQUEST = 0;
export const TYPE_RESPONSE = 1;

/** The request header without its 8N bytes of argument lengths; N is read from the first 31 bytes. */
export const REQUEST_FIXED = 35;
export const REQUEST_COUNTED = 31;
export const RESPONSE_HEADER = 20;
export const HEARTBEAT_SIZE = 18;

/** Where the u64 request id sits in each frame type. */
export const ID_REQUEST = 7;
export const ID_RESPONSE = 8;
export const ID_HEARTBEAT = 6;

/** The serialization byte of the capture, whose arguments and properties are hessian2. Unverified as a table. */
export const SERIALIZATION_HESSIAN2 = 4;

/**
 * Response status. 0 is success (the only value the public evidence implies); the others are ours,
 * unverified, one per reason so a caller's logs tell them apart. README.md says how to adapt them.
 */
export const Status = {
  OK: 0,
  BAD_REQUEST: 40,
  FRAME_TOO_LARGE: 41,
  SERVICE_NOT_FOUND: 60,
  SERVER_ERROR: 80,
  NO_PROVIDER: 81,
  CONNECT_FAILED: 82,
  TIMEOUT: 31,
  THREADPOOL_EXHAUSTED: 100,
} as const;

/** Where a frame's id is, from its first three bytes. */
export const idOffset = (raw: Buffer): number =>
  raw[0] === HEARTBEAT_MAGIC ? ID_HEARTBEAT : raw[2] === TYPE_RESPONSE ? ID_RESPONSE : ID_REQUEST;
