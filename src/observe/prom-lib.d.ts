// prom-client ships types for its index only; observe/prom.ts imports its files one by one and gives each
// the index's type.
declare module 'prom-client/lib/*.js' {
  const exported: unknown;
  export default exported;
}
