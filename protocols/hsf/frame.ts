import type { Frame, FrameKind, RequestId } from '../codec.js';
import { readStringMap } from '../hessian/skip.js';
import { REQUEST_COUNTED, REQUEST_FIXED } from './constants.js';

/**
 * One decoded HSF frame. Routing names: `service` is the service name as sent (`interface:version`),
 * `interface` and `version` its parts around the first colon, `method` the method name; `group` is the
 * `target_group` entry of the request properties, and any other name is a properties entry. The service
 * and method are read on first use; the properties (a hessian2 map after the arguments) only when a route
 * asks for something else. Responses and heartbeats carry no headers.
 */
export class HsfFrame implements Frame {
  // null until read; undefined when absent.
  private service: string | undefined | null = null;
  private method: string | undefined | null = null;
  private props: Map<string, string> | undefined | null = null;

  /** `args` is the argument count of a complete request; without it (a header cut short) there are no headers. */
  constructor(
    readonly raw: Buffer,
    readonly kind: FrameKind,
    readonly heartbeat: boolean,
    readonly requestId: RequestId,
    readonly timeoutMs: number | undefined,
    readonly status: number | undefined,
    private readonly args?: number,
  ) {}

  get ok(): boolean {
    return this.status === undefined || this.status === 0;
  }

  header(name: string): string | undefined {
    switch (name) {
      case 'service':
        if (this.service === null) this.service = this.text(0);
        return this.service;
      case 'method':
        if (this.method === null) this.method = this.text(1);
        return this.method;
      case 'interface':
      case 'version': {
        const s = this.header('service');
        const colon = s === undefined ? -1 : s.indexOf(':');
        if (name === 'interface') return colon < 0 ? s : s!.slice(0, colon) || undefined;
        return colon < 0 ? undefined : s!.slice(colon + 1) || undefined;
      }
      case 'group':
        return this.property('target_group');
      default:
        return this.property(name);
    }
  }

  /** The service name (0) or method name (1), which follow the header in that order. */
  private text(which: 0 | 1): string | undefined {
    if (this.args === undefined) return undefined;
    const b = this.raw;
    const start = REQUEST_FIXED + 8 * this.args + (which === 0 ? 0 : b.readUInt32BE(19));
    const end = start + b.readUInt32BE(which === 0 ? 19 : 23);
    return end > start ? b.toString('utf8', start, end) : undefined;
  }

  /** The properties fill the end of the frame; their length follows the 2N argument lengths. */
  private property(name: string): string | undefined {
    if (this.props === null) {
      const b = this.raw;
      this.props = this.args === undefined ? undefined
        : readStringMap(b, b.length - b.readUInt32BE(REQUEST_COUNTED + 8 * this.args), b.length);
    }
    return this.props?.get(name);
  }
}
