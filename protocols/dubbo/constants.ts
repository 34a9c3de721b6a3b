/**
 * Dubbo 2 wire constants (dubbo-remoting ExchangeCodec). Header, 16 bytes, big-endian:
 * magic 0xdabb | flag | status | request id u64 | body length u32.
 */
export const MAGIC_HI = 0xda;
export const MAGIC_LO = 0xbb;
export const HEADER = 16;

export const FLAG_REQUEST = 0x80;
export const FLAG_TWOWAY = 0x40;
export const FLAG_EVENT = 0x20;
export const SERIALIZATION_MASK = 0x1f;
export const HESSIAN2 = 2;

/** Response status byte (org.apache.dubbo.remoting.exchange.Response). */
export const Status = {
  OK: 20,
  CLIENT_TIMEOUT: 30,
  SERVER_TIMEOUT: 31,
  BAD_REQUEST: 40,
  BAD_RESPONSE: 50,
  SERVICE_NOT_FOUND: 60,
  SERVICE_ERROR: 70,
  SERVER_ERROR: 80,
  CLIENT_ERROR: 90,
  SERVER_THREADPOOL_EXHAUSTED_ERROR: 100,
} as const;
