/**
 * The sidecar's V8 heap defaults: derived from the container's memory limit, never overriding flags the
 * operator gave, and applied to the real CLI process (re-executed: process.execve, or libc's through koffi).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { containerLimit, heapFlags, holdYoungGenerationByDefault, poolFlags, SEMI_SPACE_MIB } from '../../src/cli/heap.js';
import { V8_SHRINKS_NEW_SPACE } from '../../src/memory/young-generation.js';
import { cgroupCpuQuota, cpuBudget } from '../../src/sys/cpus.js';
import { loadLibc } from '../../src/sys/libc.js';
import { libcReplacer, processReplacer } from '../../src/sys/replace-process.js';
import { endStartupTiering, RESTORE_ENV, startupTiering } from '../../src/sys/tiering.js';
import { cliPath } from '../helpers/paths.js';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

t.test('the container limit: a cgroup limit below the machine RAM, else none', async (t) => {
  t.equal(containerLimit(512 * MIB, 16 * GIB), 512 * MIB);
  t.equal(containerLimit(2 ** 64, 16 * GIB), undefined, 'no cgroup limit (Node reports 2^64)');
  t.equal(containerLimit(32 * GIB, 16 * GIB), undefined, 'a limit above RAM is no limit');
  t.equal(containerLimit(0, 16 * GIB), undefined);
  t.equal(containerLimit(undefined, 16 * GIB), undefined, 'a Node without constrainedMemory');
});

t.test('flags: a small young generation always, the old generation from the limit', async (t) => {
  t.same(heapFlags(undefined, []), [`--max-semi-space-size=${SEMI_SPACE_MIB}`], 'no limit: V8 sizes the old generation');
  t.same(heapFlags(1 * GIB, []), [`--max-semi-space-size=${SEMI_SPACE_MIB}`, '--max-old-space-size=768'], 'three quarters of 1 GiB (Istio\'s default limit)');
  t.same(heapFlags(64 * MIB, []), ['--max-semi-space-size=2', '--max-old-space-size=96'], 'never below 96 MiB; the young generation\'s bound at its least');
  t.same(heapFlags(256 * MIB, []), ['--max-semi-space-size=4', '--max-old-space-size=192'], 'a semi-space of 1/64 of a small limit');
  t.same(heapFlags(64 * GIB, []), [`--max-semi-space-size=${SEMI_SPACE_MIB}`, '--max-old-space-size=2048'], 'never above 2 GiB');
  t.same(heapFlags(1 * GIB, ['--max-old-space-size=300', '--max-semi-space-size=8']), [], 'given flags win');
  t.same(heapFlags(1 * GIB, ['--max_semi_space_size=8']), ['--max-old-space-size=768'], 'in either spelling');
  t.same(heapFlags(undefined, ['--semi-space-growth-factor=3']), [], 'a growth factor given: the young generation is the operator\'s');
  t.same(heapFlags(undefined, ['--heap-growing-percent=20']), [], 'and so is it with the old generation\'s growth given (widening would change it)');
});

t.test('the CPU budget: the CPUs to run on, capped by the cgroup quota', async (t) => {
  const files = (f: Record<string, string>) => (file: string) => f[file];
  t.equal(cgroupCpuQuota(files({ '/sys/fs/cgroup/cpu.max': '200000 100000\n' })), 2, 'cgroup v2: quota over period');
  t.equal(cgroupCpuQuota(files({ '/sys/fs/cgroup/cpu.max': '150000 100000\n' })), 2, 'a fraction rounds up');
  t.equal(cgroupCpuQuota(files({ '/sys/fs/cgroup/cpu.max': '10000 100000\n' })), 1, 'at least one');
  t.equal(cgroupCpuQuota(files({ '/sys/fs/cgroup/cpu.max': 'max 100000\n' })), undefined, 'cgroup v2, no limit');
  t.equal(cgroupCpuQuota(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '400000\n', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n' })), 4, 'cgroup v1');
  t.equal(cgroupCpuQuota(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1\n', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n' })), undefined, 'cgroup v1, no limit');
  t.equal(cgroupCpuQuota(files({})), undefined, 'no cgroup files');
  t.equal(cpuBudget(16, 2), 2, 'a pod limited to 2 CPUs on a 16-core node');
  t.equal(cpuBudget(2, undefined), 2);
  t.equal(cpuBudget(2, 8), 2, 'a quota above the CPUs there are');
  t.ok(cpuBudget() >= 1, 'this machine');
});

t.test('V8\'s worker pool: the CPU budget less the main thread, between 1 and Node\'s 4', async (t) => {
  t.same(poolFlags(1, []), ['--v8-pool-size=1']);
  t.same(poolFlags(2, []), ['--v8-pool-size=1']);
  t.same(poolFlags(4, []), ['--v8-pool-size=3']);
  t.same(poolFlags(5, []), [], 'Node\'s own 4: nothing to add');
  t.same(poolFlags(64, []), []);
  t.same(poolFlags(2, ['--v8-pool-size=3']), [], 'a size given wins');
});

// process.execve (Node ≥ 22.15) or libc's through koffi (Node 20): the CLI re-executes with its defaults.
const reexecutes = processReplacer() !== undefined;

t.test('the CLI runs with them, re-executed once (process.execve, or libc\'s through koffi on Node 20)', async (t) => {
  // A module imported before the CLI prints the flags the process runs with, in each process image.
  const show = `data:text/javascript,process.stderr.write("execArgv " + process.pid + " " + JSON.stringify(process.execArgv.filter((a) => !a.startsWith("--import"))) + " " + process.env.XSIDECAR_HEAP_DEFAULTS + "\\n")`;
  const run = (env: Record<string, string>, flags: string[] = []) =>
    spawnSync(process.execPath, [`--import=${show}`, ...flags, cliPath, 'run', '-c', '/nonexistent/bootstrap.yaml'], { env: { ...process.env, XSIDECAR_HEAP_DEFAULTS: '', ...env }, encoding: 'utf8' });
  const images = (r: ReturnType<typeof run>) => [...r.stderr.matchAll(/^execArgv (\d+) (.*) (\S*)$/gm)].map((m) => ({ pid: m[1], flags: JSON.parse(m[2]!) as string[], env: m[3] }));
  const seen = (r: ReturnType<typeof run>) => images(r).map((i) => i.flags);
  t.ok(reexecutes, 'this Node can re-execute itself (process.execve, or koffi loads libc)');

  const r = run({});
  t.equal(r.status, 1, 'a missing bootstrap is still a clear error');
  t.match(r.stderr, /nonexistent\/bootstrap\.yaml/);
  const maglev = startupTiering([]).flags;
  const pool = poolFlags(cpuBudget(), []);
  // What this machine adds: the heap flags for its cgroup limit (if any), the pool for its CPUs.
  const heap = (given: string[] = []) => heapFlags(containerLimit(), given);
  t.same(seen(r), [[], [...heap(), ...pool, ...maglev]], 're-executed once with the defaults');
  t.equal(images(r).at(-1)!.env, 'applied-young', 'and told that the young generation\'s bound is its own to hold');
  t.equal(images(r)[0]!.pid, images(r)[1]!.pid, 'in the same process: nothing stays behind');

  t.same(seen(run({ XSIDECAR_HEAP_DEFAULTS: 'off' })), [[]], 'XSIDECAR_HEAP_DEFAULTS=off: as started');
  const added = [...heap(['--max-semi-space-size=4']), ...pool, ...maglev];
  const given = images(run({}, ['--max-semi-space-size=4']));
  if (added.length > 0) {
    t.same(given.at(-1)!.flags, [...added, '--max-semi-space-size=4'], 'a heap flag given wins, no heap flag added (the pool and the start-up tiering still are)');
    t.equal(given.at(-1)!.env, 'applied', 'and the young generation is left to V8');
  } else t.same(given.map((i) => i.flags), [['--max-semi-space-size=4']], 'a heap flag given, nothing else to add: not re-executed');
  t.same(seen(run({}, ['--stack-size=900'])).at(-1), [...heap(), ...pool, ...maglev, '--stack-size=900'], 'other flags are kept');
  t.same(seen(run({}, ['--no-maglev'])).at(-1), [...heap(), ...pool, '--no-maglev'], 'Maglev set by the operator: its threshold is left alone');
  if (pool.length > 0) t.same(seen(run({}, ['--v8-pool-size=2'])).at(-1), [...heap(), ...maglev, '--v8-pool-size=2'], 'a pool size given wins');
});

t.test('start-up tiering: a high Maglev threshold where V8\'s default is known, put back once', async (t) => {
  t.same(startupTiering([], '13.6.233.17-node.44'), { flags: ['--invocation-count-for-maglev=10000'], env: { [RESTORE_ENV]: '400' } }, 'Node 24');
  t.same(startupTiering([], '12.4.254.21-node.33').flags, ['--invocation-count-for-maglev=10000'], 'Node 22');
  t.same(startupTiering([], '11.3.244.8-node.33'), { flags: [], env: {} }, 'Node 20: Maglev is off');
  t.same(startupTiering([], '14.1.0.0').flags, [], 'a V8 whose default is not known');
  t.same(startupTiering(['--invocation_count_for_maglev=50'], '13.6.0').flags, [], 'a threshold given wins');
  t.same(startupTiering(['--maglev'], '13.6.0').flags, [], 'so does --maglev');
  const env: NodeJS.ProcessEnv = {};
  t.equal(endStartupTiering(env), false, 'nothing raised: nothing to put back');
  env[RESTORE_ENV] = 'x';
  t.equal(endStartupTiering(env), false, 'not a number: left alone');
  t.notOk(RESTORE_ENV in env, 'and removed');
});

t.test('the defaults are applied before any of the CLI is loaded', async (t) => {
  // Preloaded: at the re-exec (execve) or the young generation's hold (setFlagsFromString), whichever comes
  // first, which of the built-ins that only the CLI loads (DNS, the Bolt codec, pino, the metrics) are in.
  const hook = `const heavy = ['dgram', 'zlib', 'worker_threads', 'perf_hooks']; let told = false;
    const tell = (at) => { if (!told) { told = true; process.stderr.write('preflight ' + JSON.stringify({ at, loaded: heavy.filter((m) => process.moduleLoadList.includes('NativeModule ' + m)) }) + '\\n'); } };
    const v8 = require('v8'); const set = v8.setFlagsFromString; v8.setFlagsFromString = function () { tell('setFlagsFromString'); return set.apply(this, arguments); };
    const execve = process.execve; if (execve) process.execve = function () { tell('execve'); return execve.apply(this, arguments); };
    const dlopen = process.dlopen; process.dlopen = function () { tell('dlopen'); return dlopen.apply(this, arguments); };`;
  const dir = mkdtempSync(join(tmpdir(), 'xsidecar-preflight-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'hook.cjs'), hook);
  // Through `env -u`: tap puts its own hooks into every node it sees spawned, and they load some of these.
  const r = spawnSync('env', ['-u', 'NODE_OPTIONS', process.execPath, '-r', join(dir, 'hook.cjs'), cliPath, 'run', '-c', '/nonexistent/bootstrap.yaml'], { env: { ...process.env, XSIDECAR_HEAP_DEFAULTS: '' }, encoding: 'utf8' });
  const m = /^preflight (.*)$/m.exec(r.stderr);
  t.ok(m, `the defaults were applied: ${r.stderr.slice(0, 400)}`);
  const seen = JSON.parse(m![1]!) as { at: string; loaded: string[] };
  // Node 20: koffi's native module (dlopen), for libc's execve, is the first thing the defaults do.
  t.equal(seen.at, typeof (process as { execve?: unknown }).execve === 'function' ? 'execve' : 'dlopen');
  t.same(seen.loaded, [], 'nothing of the CLI loaded yet');
});

t.test('the young generation: held where it starts, widened for a push where V8 shrinks it again', async (t) => {
  t.equal(holdYoungGenerationByDefault(['--max-semi-space-size=8'], false), false, 'a size given wins');
  t.equal(holdYoungGenerationByDefault(['--semi_space_growth_factor=2'], false), false, 'and so does a factor given');
  t.equal(holdYoungGenerationByDefault(['--heap-growing-percent=20'], false), false, 'or the old generation\'s growth');
  // In a fresh process, as the CLI starts on this Node (widenable where V8 shrinks it again, Node 24):
  // allocate with survivors, as a config push does, and see what V8 made of new space at each step.
  const widenable = V8_SHRINKS_NEW_SPACE;
  const heap = new URL('../../src/cli/heap.js', import.meta.url).href;
  const compact = new URL('../../src/memory/compact.js', import.meta.url).href;
  const young = new URL('../../src/memory/young-generation.js', import.meta.url).href;
  const script = (hold: boolean) => `import v8 from 'node:v8';
    import { holdYoungGenerationByDefault } from ${JSON.stringify(heap)};
    import { collectFully } from ${JSON.stringify(compact)};
    import { narrowYoungGeneration, widenYoungGeneration } from ${JSON.stringify(young)};
    const size = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size;
    const push = () => { const keep = []; for (let r = 0; r < 30; r++) { const a = []; for (let i = 0; i < 100000; i++) a.push({ i, s: 'x' + i }); keep.push(a.slice(0, 20000)); } return keep.length; };
    const out = {};
    ${hold ? `holdYoungGenerationByDefault([], ${widenable});` : ''}
    push(); out.held = size();
    out.widened = widenYoungGeneration(); push(); out.during = size();
    out.narrowed = narrowYoungGeneration(); collectFully(); out.after = size();
    process.stdout.write(JSON.stringify(out));`;
  const run = (hold: boolean) => {
    // With the bound the CLI's re-exec gives.
    const r = spawnSync(process.execPath, [`--max-semi-space-size=${SEMI_SPACE_MIB}`, '--input-type=module', '-e', script(hold)], { encoding: 'utf8' });
    t.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { held: number; widened: boolean; during: number; narrowed: boolean; after: number };
  };
  const held = run(true);
  const free = run(false);
  // Alone it stays at the few MiB it starts with; under a loaded CI machine Node 24 once showed 5.8.
  // Unheld, V8 grows it to 16 MiB and more, which the comparison tells apart.
  t.ok(held.held > 0 && held.held <= 8 * MIB, `held: ${(held.held / MIB).toFixed(1)} MiB of new space`);
  t.ok(free.held >= 2 * held.held, `V8 alone grew it to ${(free.held / MIB).toFixed(1)} MiB`);
  t.equal(free.widened, false, 'not held: nothing to widen');
  if (widenable) {
    t.equal(held.widened, true, 'widened for a push');
    t.ok(held.during >= 2 * held.held && held.during <= 3 * SEMI_SPACE_MIB * MIB, `which let it grow to ${(held.during / MIB).toFixed(1)} MiB, within its bound`);
    t.equal(held.narrowed, true, 'narrowed once the push is over');
    t.ok(held.after <= held.held, `and the compaction shrank it back to ${(held.after / MIB).toFixed(1)} MiB`);
  } else {
    t.equal(held.widened, false, 'Node 20 does not shrink it again: never widened');
    t.ok(held.during <= 8 * MIB, `still held during a push: ${(held.during / MIB).toFixed(1)} MiB`);
    t.equal(held.narrowed, false);
  }
});

t.test('libc\'s execve through koffi (Node 20\'s way): the same process, its output still where it was', async (t) => {
  const libc = loadLibc();
  t.ok(libc?.execve, 'koffi loads libc\'s execve');
  // A child that replaces itself by libcReplacer with a node printing its pid, flags and arguments to
  // stdout and stderr: both must arrive here (Node marks them close-on-exec), from the same pid.
  const lib = new URL('../../src/sys/replace-process.js', import.meta.url).href;
  const libcUrl = new URL('../../src/sys/libc.js', import.meta.url).href;
  const second = 'const m = JSON.stringify([process.pid, process.execArgv[0], process.argv.slice(1), process.env.REPLACED]); process.stdout.write("out " + m + "\\n"); process.stderr.write("err " + m + "\\n");';
  const first = `import { libcReplacer } from ${JSON.stringify(lib)}; import { loadLibc } from ${JSON.stringify(libcUrl)};
    process.stdout.write("before " + process.pid + "\\n");
    libcReplacer(loadLibc())(process.execPath, [process.execPath, '--stack-size=900', '-e', ${JSON.stringify(second)}, 'a b', 'ü'], { ...process.env, REPLACED: 'yes' });`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', first], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  const pid = /^before (\d+)$/m.exec(r.stdout)?.[1];
  const out = /^out (.*)$/m.exec(r.stdout)?.[1];
  const err = /^err (.*)$/m.exec(r.stderr)?.[1];
  t.ok(out && err, `the new image wrote to the same stdout and stderr: ${r.stdout} / ${r.stderr}`);
  t.same(JSON.parse(out!), [Number(pid), '--stack-size=900', ['a b', 'ü'], 'yes'], 'same pid, its flags, arguments and environment as given');
  t.equal(err, out);
  t.throws(() => libcReplacer(libc)!('/nonexistent/node', ['node'], {}), /execve \/nonexistent\/node: ENOENT/, 'a failed execve is an error to handle, not an abort');
});

t.test('without a way to re-execute, or when execve fails: runs as started, the young generation held', async (t) => {
  const heap = new URL('../../src/cli/heap.js', import.meta.url).href;
  const young = new URL('../../src/memory/young-generation.js', import.meta.url).href;
  // In a fresh process each (the hold is process-wide): which replacer, what it was asked, what followed.
  const outcome = (replacer: string) => {
    const script = `import { applyHeapDefaults } from ${JSON.stringify(heap)}; import { youngGenerationState } from ${JSON.stringify(young)};
      const asked = []; applyHeapDefaults({ XSIDECAR_HEAP_DEFAULTS: '' }, ${replacer});
      process.stdout.write(JSON.stringify({ asked, state: youngGenerationState() }));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
    t.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { asked: string[][]; state: string };
  };
  t.same(outcome('() => undefined'), { asked: [], state: 'held' }, 'none (koffi does not load): held, and on it goes');
  const failed = outcome(`() => (file, args) => { asked.push(args); throw new Error('execve ' + file + ': EPERM'); }`);
  t.equal(failed.asked.length, 1, 'execve was tried once');
  t.ok(failed.asked[0]!.some((a) => a.startsWith('--max-semi-space-size=')), `with the defaults: ${failed.asked[0]!.join(' ')}`);
  t.equal(failed.state, 'held', 'it failed: held, and on it goes');
});
