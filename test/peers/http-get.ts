/** usage: http-get URL [METHOD] — prints {"status":N,"body":"..."} or {"error":"..."}; for use inside a netns. */
const [url, method = 'GET'] = process.argv.slice(2);
try {
  const res = await fetch(url!, { method, signal: AbortSignal.timeout(5000) });
  process.stdout.write(`${JSON.stringify({ status: res.status, body: await res.text() })}\n`);
} catch (e) {
  const cause = (e as { cause?: { code?: string } }).cause;
  process.stdout.write(`${JSON.stringify({ error: cause?.code ?? (e as Error).message })}\n`);
}
