import t from 'tap';
import { IdTable } from '../../src/proxy/xprotocol/id-table.js';

t.test('ids are unique among those in flight, skip 0 and wrap at 32 bits', async (t) => {
  const table = new IdTable<string>();
  const slow = table.allocate();
  table.set(slow, 'slow');
  const seen = new Set<number>([slow]);
  // Many short requests come and go while one stays in flight: its id is never handed out again.
  let clashes = 0;
  let lost = 0;
  for (let i = 0; i < 10_000; i++) {
    const id = table.allocate();
    if (id === slow) clashes++;
    table.set(id, `r${i}`);
    if (table.get(id) !== `r${i}`) lost++;
    table.delete(id);
    seen.add(id);
  }
  t.same([clashes, lost], [0, 0], 'the slow request\'s id is never reused and every entry is found');
  t.equal(table.get(slow), 'slow');
  t.equal(table.size, 1);
  const wrapping = new IdTable<number>();
  (wrapping as unknown as { next: number }).next = 0xfffffffe;
  t.same([wrapping.allocate(), (wrapping.set(0xffffffff, 1), wrapping.allocate())], [0xffffffff, 1], 'after 2^32-1 comes 1, never 0');
});

t.test('growing keeps every entry reachable; drain empties', async (t) => {
  const table = new IdTable<number>();
  const ids: number[] = [];
  for (let i = 0; i < 1000; i++) {
    const id = table.allocate(5);
    table.set(id, i);
    ids.push(id);
  }
  t.notOk(ids.includes(5), 'the reserved (keepalive) id is skipped');
  t.equal(table.size, 1000);
  t.ok(ids.every((id, i) => table.get(id) === i), 'every entry is found after growing');
  t.equal(table.get(123456), undefined, 'an unknown id (a late response) finds nothing');
  t.equal(table.drain().length, 1000);
  t.equal(table.size, 0);
  t.equal(table.get(ids[0]!), undefined);
});
