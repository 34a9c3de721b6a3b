import { WriteBatch } from './batch.js';
import { Deadlines } from './deadlines.js';
import type { Pending } from './pending.js';

/** Writes made during one turn of the event loop are flushed together after it (one write per socket). */
export const batch = new WriteBatch();

/** Every request's deadline, swept by one timer. */
export const deadlines = new Deadlines<Pending>((p) => {
  p.conn?.forget(p);
  p.owner.fail(p, 'timeout', `no response within the deadline from ${p.host.key}`, true);
});
