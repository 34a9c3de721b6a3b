/**
 * A host holds its outlier counts and connection pools only once it needs them: most of a mesh's hosts
 * never fail and never get a connection, and 10,000 hosts each with their own empty ones were 2 MiB at
 * ready. What outlier detection reads and does must not change for it.
 */
import t from 'tap';
import type { OutlierDetection } from '../../src/config/model.js';
import { Host } from '../../src/upstream/host.js';
import { OutlierDetector } from '../../src/upstream/outlier.js';

const config: OutlierDetection = {
  consecutive5xx: 2, consecutiveGatewayFailure: 5, consecutiveLocalOriginFailure: 5, enforcing5xx: 100, enforcingGatewayFailure: 0, enforcingLocalOrigin: 100,
  splitExternalLocalOriginErrors: false, intervalMs: 60_000, baseEjectionTimeMs: 30_000, maxEjectionTimeMs: 300_000, maxEjectionPercent: 100,
};

t.test('outlier counts: shared zeros until the first failure, then the host\'s own; ejection as before', async (t) => {
  const [a, b] = [new Host('10.0.0.1', 80), new Host('10.0.0.2', 80)];
  t.equal(a.outlier, b.outlier, 'two fresh hosts read the same zeros');
  t.throws(() => ((a.outlier as { times: number }).times = 1), TypeError, 'which cannot be written to');
  const detector = new OutlierDetector('c', config, () => [a, b]);
  detector.report(a, 'success');
  t.equal(a.outlier, b.outlier, 'a success on a fresh host leaves it on the shared zeros');
  detector.report(a, 'server-error');
  t.not(a.outlier, b.outlier, 'a failure gives it counts of its own');
  t.equal(a.outlier.consecutive5xx, 1);
  t.equal(b.outlier.consecutive5xx, 0, 'the other host is untouched');
  detector.report(a, 'success');
  t.equal(a.outlier.consecutive5xx, 0, 'a success resets them');
  detector.report(a, 'server-error');
  detector.report(a, 'server-error');
  t.ok(a.outlier.ejectedUntil > Date.now(), 'two consecutive 5xx eject it');
  t.equal(a.outlier.times, 1);
  t.ok(a.excluded(Date.now()) && !b.excluded(Date.now()), 'only it is out of rotation');
  detector.stop();
});

t.test('pools: made with the first; a stale pool does not drop its successor; closing a host closes them all', async (t) => {
  const h = new Host('10.0.0.1', 80);
  t.equal(h.pool('bolt'), undefined);
  h.closePools();
  const closed: string[] = [];
  const pool = (name: string) => ({ close: () => closed.push(name) });
  const first = pool('bolt-1');
  h.addPool('bolt', first);
  t.equal(h.pool('bolt'), first);
  const second = pool('bolt-2');
  h.addPool('bolt', second);
  h.dropPool('bolt', first);
  t.equal(h.pool('bolt'), second, 'the pool that replaced it stays');
  h.addPool('dubbo', { close: () => (closed.push('dubbo'), h.dropPool('dubbo', h.pool('dubbo')!)) });
  h.closePools();
  t.same(closed.sort(), ['bolt-2', 'dubbo'], 'each pool is closed once, even one that drops itself as it closes');
});
