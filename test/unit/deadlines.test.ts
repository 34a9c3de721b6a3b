/** Request deadlines: one timer, set for the earliest bucket; answered requests never expire. */
import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { Deadlines } from '../../src/proxy/xprotocol/deadlines.js';

interface Item {
  name: string;
  deadline: number;
  bucket: number;
}
const item = (name: string, inMs: number): Item => ({ name, deadline: Date.now() + inMs, bucket: -1 });

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  for (const end = Date.now() + ms; !cond() && Date.now() < end; ) await sleep(5);
}

t.test('a deadline added after a later one still fires first; answered items never fire', async (t) => {
  const expired: string[] = [];
  const d = new Deadlines<Item>((i) => expired.push(i.name), 5);
  const late = item('late', 400);
  const answered = item('answered', 20);
  d.add(late);
  d.add(item('early', 30));
  d.add(answered);
  d.remove(answered);
  t.equal(answered.bucket, -1);
  await until(() => expired.length >= 1);
  t.same(expired, ['early'], 'the earlier deadline did not wait for the timer set for the later one');
  await until(() => expired.length >= 2);
  t.same(expired, ['early', 'late']);
  t.equal(d.size, 0, 'nothing left scheduled');
});

t.test('an item re-scheduled from the expiry callback (a retry) fires again', async (t) => {
  const fired: number[] = [];
  const retried = item('retry', 10);
  const d = new Deadlines<Item>((i) => {
    fired.push(Date.now());
    if (fired.length === 1) {
      i.deadline = Date.now() + 30;
      d.add(i);
    }
  }, 5);
  d.add(retried);
  await until(() => fired.length >= 2);
  t.equal(fired.length, 2);
  t.equal(d.size, 0);
});

t.test('once everything is answered, the timer that fires finds nothing and re-arms for what is left', async (t) => {
  const expired: string[] = [];
  const d = new Deadlines<Item>((i) => expired.push(i.name), 5);
  const a = item('a', 20);
  d.add(a);
  d.remove(a);
  const b = item('b', 80);
  d.add(b);
  await until(() => expired.length >= 1);
  t.same(expired, ['b']);
});
