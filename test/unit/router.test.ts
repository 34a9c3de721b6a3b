import t from 'tap';
import { newContext } from '../../src/config/reader.js';
import { decodeRouteConfiguration } from '../../src/config/route.js';
import { ConfigError } from '../../src/config/reader.js';
import { destinationHost, destinationKeys, selectRoute } from '../../src/router/router.js';

const headers = (h: Record<string, string>) => ({ header: (n: string) => h[n] });
const route = (cluster: string, match: object = { prefix: '/' }) => ({ match, route: { cluster } });
const config = (vhosts: object[], extra: object = {}) => decodeRouteConfiguration({ name: 'r', virtual_hosts: vhosts, ...extra }, 'r', newContext());
const dst = (ip: string, port = 12200) => destinationKeys({ address: ip, port });

t.test('virtual host: original destination first, then service and interface names, `*` last', async (t) => {
  const rc = config([
    { name: 'by-ip', domains: ['198.18.0.10'], routes: [route('ip')] },
    { name: 'by-ip-port', domains: ['198.18.0.11:12200'], routes: [route('ip-port')] },
    { name: 'by-service', domains: ['com.alipay.UserService:1.0'], routes: [route('service')] },
    { name: 'by-interface', domains: ['com.alipay.OrderService'], routes: [route('interface')] },
    { name: 'suffix', domains: ['*.payment'], routes: [route('suffix')] },
    { name: 'longer-suffix', domains: ['*.alipay.payment'], routes: [route('longer-suffix')] },
    { name: 'prefix', domains: ['com.legacy.*'], routes: [route('prefix')] },
    { name: 'any', domains: ['*'], routes: [route('any')] },
  ]);
  const pick = (keys: readonly string[], h: Record<string, string>) => selectRoute(rc, headers(h), destinationHost(rc, keys))?.cluster;
  t.equal(pick(dst('198.18.0.10'), { service: 'com.alipay.UserService:1.0' }), 'ip', 'the ClusterIP wins over the service name');
  t.equal(pick(dst('198.18.0.11'), {}), 'ip-port', 'ClusterIP:port is a domain too');
  t.equal(pick(dst('198.18.9.9'), { service: 'com.alipay.UserService:1.0' }), 'service', 'unknown IP: the service name');
  t.equal(pick(dst('198.18.9.9'), { service: 'COM.ALIPAY.USERSERVICE:1.0' }), 'service', 'domains match case-insensitively');
  t.equal(pick(dst('198.18.9.9'), { service: 'com.alipay.OrderService:2.0', interface: 'com.alipay.OrderService' }), 'interface', 'then the bare interface');
  t.equal(pick([], { service: 'x.alipay.payment' }), 'longer-suffix', 'the longest suffix wildcard wins');
  t.equal(pick([], { service: 'y.payment' }), 'suffix');
  t.equal(pick([], { service: 'com.legacy.Foo:1.0' }), 'prefix');
  t.equal(pick([], { service: 'unknown' }), 'any', '`*` only when nothing specific matched');
  t.equal(pick(dst('198.18.9.9'), {}), 'any');
});

t.test('route matching on frame headers: exact, prefix, regex, present, invert, path', async (t) => {
  const rc = config([
    {
      name: 'svc',
      domains: ['*'],
      routes: [
        route('v2-canary', { prefix: '/', headers: [{ name: 'version', exact_match: '2.0' }, { name: 'x-canary', present_match: true }] }),
        route('regex', { prefix: '/', headers: [{ name: 'method', safe_regex_match: { regex: 'get(User|Order)' } }] }),
        route('not-group-a', { prefix: '/', headers: [{ name: 'group', string_match: { exact: 'A' }, invert_match: true }, { name: 'method', string_match: { prefix: 'list' } }] }),
        route('by-path', { path: '/com.alipay.UserService:1.0/ping' }),
        route('default'),
      ],
    },
  ]);
  const pick = (h: Record<string, string>) => selectRoute(rc, headers(h), undefined)?.cluster;
  t.equal(pick({ version: '2.0', 'x-canary': '1' }), 'v2-canary');
  t.equal(pick({ version: '2.0' }), 'default', 'every header matcher must hold');
  t.equal(pick({ method: 'getUser' }), 'regex');
  t.equal(pick({ method: 'getUserX' }), 'default', 'regexes match the whole value');
  t.equal(pick({ method: 'listAll', group: 'B' }), 'not-group-a');
  t.equal(pick({ method: 'listAll', group: 'A' }), 'default', 'invert_match');
  t.equal(pick({ service: 'com.alipay.UserService:1.0', method: 'ping' }), 'by-path', 'an RPC path is /service/method');
});

t.test('weights, timeouts and retry policies decode as Istio sends them', async (t) => {
  const rc = config([
    {
      name: 'svc',
      domains: ['*'],
      retry_policy: { retry_on: 'connect-failure,reset', num_retries: 3 },
      routes: [
        { match: { prefix: '/', headers: [{ name: 'method', exact_match: 'slow' }] }, route: { cluster: 'a', timeout: '0.25s', retry_policy: { retry_on: 'connect-failure,retriable-status-codes', num_retries: 1, per_try_timeout: '0.1s', retriable_status_codes: [503] } } },
        { match: { prefix: '/' }, route: { weighted_clusters: { clusters: [{ name: 'a', weight: 80 }, { name: 'b', weight: 20 }] }, timeout: '0s' } },
      ],
    },
  ]);
  const slow = selectRoute(rc, headers({ method: 'slow' }), undefined)!;
  t.same([slow.timeoutMs, slow.retryPolicy], [250, { numRetries: 1, retryOn: ['connect-failure', 'retriable-status-codes'], perTryTimeoutMs: 100, retriableStatusCodes: [503] }], 'the route policy wins');
  const other = selectRoute(rc, headers({}), undefined)!;
  t.same(other.weightedClusters, [{ name: 'a', weight: 80 }, { name: 'b', weight: 20 }]);
  t.equal(other.timeoutMs, 0, 'Istio\'s "0s": no route timeout');
  t.same(other.retryPolicy?.retryOn, ['connect-failure', 'reset'], 'inherited from the virtual host');
});

t.test('invalid route configurations are rejected with the field path', async (t) => {
  const bad = (vhosts: object[], path: RegExp) => {
    const err = t.throws(() => config(vhosts)) as ConfigError;
    t.match(err.message, path);
  };
  bad([{ name: 'a', domains: ['x'], routes: [{ match: { prefix: '/' }, route: {} }] }], /virtual_hosts\[0\]\.routes\[0\]\.route\.cluster: a route needs cluster or weighted_clusters/);
  bad([{ name: 'a', domains: ['x'], routes: [route('c', { prefix: '/', headers: [{ name: 'm', safe_regex_match: { regex: '(' } }] })] }], /safe_regex_match\.regex: invalid regex/);
  bad([{ name: 'a', domains: ['dup'], routes: [] }, { name: 'b', domains: ['DUP'], routes: [] }], /domain "dup" appears in virtual hosts a and b/);
  bad([{ name: 'a', domains: ['a*b'], routes: [] }], /wildcard must lead or trail/);
});
