/**
 * Bolt wire constants (sofa-bolt RpcProtocol = proto 0x01, RpcProtocolV2 = proto 0x02).
 *
 * v2 inserts `ver1` after the proto byte and a `switch` byte after the codec byte, so with s = proto - 1 the
 * fixed header reads: type@1+s cmdcode@2+s ver2@4+s id@5+s codec@9+s [switch@11], then from 10+2s either
 * timeout(i32) classLen headerLen contentLen (requests, 22/24 bytes) or status(u16) classLen headerLen
 * contentLen (responses, 20/22 bytes). A CRC32 of everything before it trails a v2 frame only when
 * ver1 = 2 and the switch's bit 0 is set (sofa-bolt RpcCommandDecoderV2/EncoderV2).
 */
export const TYPE_RESPONSE = 0;
export const TYPE_REQUEST = 1;
export const TYPE_ONEWAY = 2;

export const CMD_HEARTBEAT = 0;
export const CMD_RESPONSE = 2;

export const CODEC_HESSIAN2 = 1;
export const CODEC_PROTOBUF = 11;

/** sofa-bolt ResponseStatus values. */
export const Status = {
  SUCCESS: 0x00,
  SERVER_EXCEPTION: 0x02,
  SERVER_THREADPOOL_BUSY: 0x04,
  NO_PROCESSOR: 0x06,
  TIMEOUT: 0x07,
  CODEC_EXCEPTION: 0x09,
  CONNECTION_CLOSED: 0x10,
} as const;

/** 1 for proto 0x02, 0 for 0x01: the shift of every field after the proto byte. */
export const shift = (raw: Buffer): number => (raw[0] === 2 ? 1 : 0);

/** Whether a complete frame carries the CRC32 trailer. */
export const hasCrc = (raw: Buffer): boolean => raw[0] === 2 && raw[1] === 2 && (raw[11] & 1) === 1;
