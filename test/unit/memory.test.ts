/**
 * Large blocks are mapped on their own (src/memory/compact.ts): freed multi-MiB buffers leave RSS at once,
 * even after glibc's dynamic threshold has risen and with small live blocks between them. Each case runs in
 * a process of its own, since the allocator setting is process-wide; the control shows what the setting
 * prevents.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { loadLibc } from '../../src/sys/libc.js';

const compact = pathToFileURL(join(import.meta.dirname, '../../src/memory/compact.js')).href;

const script = `
const [mode, url] = process.argv.slice(2);
const { mapLargeBlocksAlone } = await import(url);
if (mode === 'fixed' && !mapLargeBlocksAlone()) throw new Error('mallopt failed');
const rss = () => process.memoryUsage.rss();
const settle = async () => { for (let i = 0; i < 3; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 100)); } };
// One 20 MiB block freed: glibc's default threshold rises to its size, so the next 4 MiB blocks come from the heap.
let big = Buffer.allocUnsafeSlow(20 << 20); big.fill(1); big = null; await settle();
const before = rss();
let bigs = []; const keep = [];
// A partial frame's buffer, then a small block that stays (a socket's read, a header): the heap cannot shrink past it.
for (let i = 0; i < 40; i++) { const b = Buffer.allocUnsafeSlow(4 << 20); b.fill(1); bigs.push(b); const k = Buffer.allocUnsafeSlow(64 << 10); k.fill(2); keep.push(k); }
const peak = rss(); bigs = null; await settle();
console.log(JSON.stringify({ before, peak, after: rss(), kept: keep.length }));
`;

const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime;
const skip = !glibc ? 'not glibc: its allocator is what this is about' : !loadLibc()?.mallopt ? 'koffi is not available' : false;

t.test('160 MiB of freed 4 MiB buffers leave RSS at once when large blocks are mapped alone', { skip }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'xsidecar-malloc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'child.mjs');
  writeFileSync(file, script);
  const run = (mode: string) => {
    const r = spawnSync(process.execPath, ['--expose-gc', file, mode, compact], { encoding: 'utf8', timeout: 60_000 });
    t.equal(r.status, 0, `${mode}: ${r.stderr}`);
    const o = JSON.parse(r.stdout) as { before: number; peak: number; after: number };
    return { grew: (o.peak - o.before) / 2 ** 20, kept: (o.after - o.before) / 2 ** 20 };
  };
  const fixed = run('fixed');
  t.ok(fixed.grew > 120, `the buffers were resident (${fixed.grew.toFixed(0)} MiB)`);
  t.ok(fixed.kept < 40, `with the setting, ${fixed.kept.toFixed(0)} MiB of 160 stay resident after they are freed`);
  const control = run('default');
  t.ok(control.kept > 100, `without it, glibc keeps ${control.kept.toFixed(0)} MiB (why the setting exists)`);
});

t.test('the trim slack is measured on anonymous memory: the binary\'s file pages never make a trim look worthwhile', async (t) => {
  const { anonymousRss } = (await import(compact)) as typeof import('../../src/memory/compact.js');
  t.equal(anonymousRss('Name:\tnode\nRssAnon:\t   12345 kB\nRssFile:\t   40000 kB\n'), 12345 * 1024, 'RssAnon, in bytes');
  t.ok(Math.abs(anonymousRss('') - process.memoryUsage.rss()) < 2 ** 20, 'without the line (no /proc): the whole RSS, as before');
  const anon = anonymousRss();
  const rss = process.memoryUsage.rss();
  t.ok(anon > 0 && anon < rss, `this process: ${(anon / 2 ** 20).toFixed(1)} MiB anonymous of ${(rss / 2 ** 20).toFixed(1)} MiB resident`);
});

t.test('the compaction after config: soon after the first config, and never put off for ever', async (t) => {
  // In a process of its own: the young generation held (widenable, as on Node 24) and the timing shortened.
  const child = `
    const [compactUrl, youngUrl] = process.argv.slice(1);
    const { compactAfterConfig, compactionTiming, configArriving } = await import(compactUrl);
    const { holdYoungGeneration, youngGenerationState } = await import(youngUrl);
    const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
    const mark = (m) => process.stdout.write(JSON.stringify({ mark: m, young: youngGenerationState() }) + '\\n');
    holdYoungGeneration({ widenable: true });
    // The first config, then the name table and another response just after it: before, each of them put
    // the first compaction off by a second, and RSS at ready was read with the push's garbage resident.
    compactAfterConfig({ first: true });
    await sleep(50);
    configArriving();
    await sleep(100);
    configArriving();
    await sleep(650);
    mark('window');
    // Responses 100 ms apart for 3 s, each putting the compaction off: it comes all the same, maxDelayMs
    // after it was first asked for, and narrows the young generation they widened.
    Object.assign(compactionTiming, { settleMs: 400, minSpacingMs: 0, maxDelayMs: 1500 });
    for (let i = 0; i < 30; i++) {
      configArriving();
      await sleep(100);
      if (i === 25) mark('storm');
    }
    await sleep(1000);
    mark('end');`;
  const young = pathToFileURL(join(import.meta.dirname, '../../src/memory/young-generation.js')).href;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', child, compact, young], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, XSIDECAR_LOG_LEVEL: 'info' } });
  t.equal(r.status, 0, r.stderr);
  const lines = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { msg?: string; mark?: string; young?: string; youngNarrowed?: boolean });
  const order = lines.map((o) => o.mark ?? (o.msg === 'memory: compacted after a config change' ? `compacted${o.youngNarrowed ? ', narrowed' : ''}` : '')).filter(Boolean);
  t.same(order, ['compacted, narrowed', 'window', 'compacted, narrowed', 'storm', 'compacted, narrowed', 'end'], 'within a second of the first config; during the storm; once it is over');
  t.same(lines.filter((o) => o.mark).map((o) => o.young), ['held', 'widened', 'held'], 'widened only while responses keep coming');
});
