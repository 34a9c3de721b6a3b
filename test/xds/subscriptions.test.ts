import t from 'tap';
import { Backoff } from '../../src/xds/backoff.js';
import { NACK_CODE, SotwSubscriptions } from '../../src/xds/subscriptions.js';
import { TYPE_URL } from '../../src/xds/type-urls.js';

const req = (type: keyof typeof TYPE_URL, version: string, nonce: string, names: string[] = [], error?: string) => ({
  type_url: TYPE_URL[type],
  version_info: version,
  response_nonce: nonce,
  resource_names: names,
  ...(error ? { error_detail: { code: NACK_CODE, message: error } } : {}),
});

t.test('first stream: CDS wildcard, EDS only once there are names', async (t) => {
  const s = new SotwSubscriptions();
  t.same(s.streamStarted(), [], 'nothing is wanted yet');
  t.same(s.watch('cluster'), req('cluster', '', ''));
  t.equal(s.watch('cluster'), undefined, 'already watching');
  t.equal(s.setNames('endpoint', []), undefined, 'no EDS request with an empty name list (istiod reads it as unsubscribe)');
  s.received('cluster', 'n1');
  t.same(s.ack('cluster', 'v1'), req('cluster', 'v1', 'n1'), 'ACK: version and nonce of the response');
  t.same(s.setNames('endpoint', ['b', 'a', 'b']), req('endpoint', '', '', ['a', 'b']), 'names sorted and unique');
  t.equal(s.setNames('endpoint', ['a', 'b']), undefined, 'unchanged names send nothing');
  t.throws(() => s.setNames('listener', ['x']), /wildcard/);
  t.throws(() => s.watch('route'), /not a wildcard/);
});

t.test('ACK, NACK and name changes carry the right version and nonce', async (t) => {
  const s = new SotwSubscriptions();
  s.watch('cluster');
  s.setNames('endpoint', ['a']);
  s.received('endpoint', 'e1');
  t.same(s.ack('endpoint', 'v1'), req('endpoint', 'v1', 'e1', ['a']));
  s.received('endpoint', 'e2');
  t.same(s.nack('endpoint', 'ClusterLoadAssignment "a": bad'), req('endpoint', 'v1', 'e2', ['a'], 'ClusterLoadAssignment "a": bad'), 'NACK keeps the last accepted version, echoes the new nonce');
  t.equal(s.version('endpoint'), 'v1');
  t.same(s.setNames('endpoint', ['a', 'c']), req('endpoint', 'v1', 'e2', ['a', 'c']), 'a name change carries the latest nonce, or istiod drops it as stale');
  t.same(s.setNames('endpoint', []), req('endpoint', 'v1', 'e2', []), 'dropping every name is an explicit unsubscribe');
  t.equal(s.setNames('endpoint', []), undefined, 'and is sent once');
});

t.test('a new stream re-subscribes everything wanted, in CDS EDS LDS RDS NDS order, with no nonce', async (t) => {
  const s = new SotwSubscriptions();
  s.watch('cluster');
  s.received('cluster', 'c1');
  s.ack('cluster', 'cv');
  s.setNames('endpoint', ['e']);
  s.received('endpoint', 'e1');
  s.ack('endpoint', 'ev');
  s.watch('listener');
  s.received('listener', 'l1');
  s.nack('listener', 'bad');
  s.setNames('route', ['9080', '80']);
  s.watch('nametable');
  t.same(s.streamStarted(), [req('cluster', 'cv', ''), req('endpoint', 'ev', '', ['e']), req('listener', '', ''), req('route', '', '', ['80', '9080']), req('nametable', '', '')]);
  s.setNames('route', []);
  t.same(s.streamStarted().map((r) => r.type_url), [TYPE_URL.cluster, TYPE_URL.endpoint, TYPE_URL.listener, TYPE_URL.nametable], 'a type with no names is not asked for');
});

t.test('backoff grows with jitter, is capped, and resets', async (t) => {
  let r = 0;
  const b = new Backoff({ baseMs: 100, maxMs: 1000, random: () => r });
  t.same([b.next(), b.next(), b.next(), b.next(), b.next()], [50, 100, 200, 400, 500], 'lower bound: half the ceiling');
  r = 1;
  t.equal(b.next(), 1000, 'upper bound: the cap');
  b.reset();
  t.equal(b.next(), 100);
  r = 0.5;
  t.equal(b.next(), 150, 'in between');
});
