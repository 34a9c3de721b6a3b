import type { Frame, FrameKind, RequestId } from '../codec.js';
import { CODEC_HESSIAN2, shift } from './constants.js';
import { peekMethod } from './hessian.js';

/**
 * One decoded Bolt frame. The header map is parsed on the first `header()` call, the body never (but for
 * a bounded peek at a hessian method name when the header map lacks it).
 *
 * Routing names: `service` is the `service` entry, else `sofa_head_target_service` (the SOFA unique name,
 * `interface:version[:uniqueId]`, as both sofa-rpc and sofa-rpc-node send it). `interface`, `version` and
 * `group` are that name's segments: SOFA carries version only there, and its uniqueId is what Dubbo calls
 * a group. `method` is `sofa_head_method_name`, else a `method` entry, else the body peek. The derived names
 * shadow entries of the same name, which count only when nothing could be derived. Other names are entries.
 */
/** Header names as bytes, to compare in place; a handful of names, asked for again and again. */
const keyBytes = new Map<string, Buffer>();
const keyOf = (name: string): Buffer => {
  let k = keyBytes.get(name);
  if (!k) keyBytes.set(name, (k = Buffer.from(name, 'utf8')));
  return k;
};

export class BoltFrame implements Frame {
  /** The resolved `service`, read once: routing asks for it (and for what derives from it) repeatedly. */
  private service: string | null | undefined = undefined;
  /** The resolved method: null when there is none. */
  private method: string | null | undefined = undefined;

  constructor(
    readonly raw: Buffer,
    readonly kind: FrameKind,
    readonly heartbeat: boolean,
    readonly requestId: RequestId,
    readonly timeoutMs: number | undefined,
    readonly status: number | undefined,
    private readonly headerStart: number,
    private readonly bodyStart: number,
    private readonly bodyEnd: number,
  ) {}

  get ok(): boolean {
    return this.status === undefined || this.status === 0;
  }

  header(name: string): string | undefined {
    switch (name) {
      case 'service':
        if (this.service === undefined) this.service = this.entry('service') ?? this.entry('sofa_head_target_service') ?? null;
        return this.service ?? undefined;
      case 'method':
        return this.peek();
      case 'interface':
        return segment(this.header('service'), 0) ?? this.entry(name);
      case 'version':
        return segment(this.header('service'), 1) ?? this.entry(name);
      case 'group':
        return segment(this.header('service'), 2) ?? this.entry(name);
      default:
        return this.entry(name);
    }
  }

  /** The method from the header map, else from the body; read once, since every route may ask. */
  private peek(): string | undefined {
    if (this.method === undefined) {
      const raw = this.raw;
      this.method = this.entry('sofa_head_method_name') ?? this.entry('method') ??
        ((this.kind !== 'response' && raw[9 + shift(raw)] === CODEC_HESSIAN2 && peekMethod(raw, this.bodyStart, this.bodyEnd)) || null);
    }
    return this.method ?? undefined;
  }

  /**
   * One entry of the header map, found by comparing key bytes in place: no map is built and only the
   * value asked for becomes a string. SimpleMapSerializer: i32 key length, key, i32 value length (-1 for
   * null), value. A bad entry ends the scan.
   */
  private entry(name: string): string | undefined {
    const b = this.raw;
    const end = this.bodyStart;
    const key = keyOf(name);
    for (let p = this.headerStart; p + 8 <= end; ) {
      const kl = b.readInt32BE(p);
      if (kl < 0 || p + 8 + kl > end) return undefined;
      const vl = b.readInt32BE(p + 4 + kl);
      const v = p + 8 + kl;
      if (v + Math.max(vl, 0) > end) return undefined;
      if (vl >= 0 && kl === key.length && key.compare(b, p + 4, p + 4 + kl) === 0) return b.toString('utf8', v, v + vl);
      p = v + Math.max(vl, 0);
    }
    return undefined;
  }
}

/** The n-th `:`-separated segment of a unique name, undefined when missing or empty. */
function segment(name: string | undefined, n: number): string | undefined {
  if (name === undefined) return undefined;
  let start = 0;
  while (n-- > 0) if ((start = name.indexOf(':', start) + 1) === 0) return undefined;
  const end = name.indexOf(':', start);
  return name.slice(start, end < 0 ? name.length : end) || undefined;
}
