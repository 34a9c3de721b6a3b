import type { StringMatcher } from './model.js';

/** Envoy's StringMatcher applied to a value: routes match headers with it, TLS matches peer SANs. */
export function matchString(m: StringMatcher, value: string): boolean {
  const v = m.ignoreCase && m.kind !== 'regex' ? value.toLowerCase() : value;
  const want = m.ignoreCase ? m.value.toLowerCase() : m.value;
  switch (m.kind) {
    case 'exact':
      return v === want;
    case 'prefix':
      return v.startsWith(want);
    case 'suffix':
      return v.endsWith(want);
    case 'contains':
      return v.includes(want);
    case 'regex':
      return m.regex!.test(value);
  }
}
