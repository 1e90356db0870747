// Column-aligned tables like Go's tabwriter output in cilium-dbg.

/** Rows of cells; a cell may hold several lines (printed as continuation rows). */
export function table(header: string[][] | string[], rows: Array<Array<string | string[]>>, gap = 3): string {
  const headers: string[][] = Array.isArray(header[0]) ? (header as string[][]) : [header as string[]];
  const expanded: string[][] = [...headers];
  for (const row of rows) {
    const height = Math.max(1, ...row.map((c) => (Array.isArray(c) ? c.length : 1)));
    for (let i = 0; i < height; i++) {
      expanded.push(row.map((c) => (Array.isArray(c) ? (c[i] ?? '') : i === 0 ? c : '')));
    }
  }
  const cols = Math.max(...expanded.map((r) => r.length));
  const widths = Array.from({ length: cols }, (_, i) => Math.max(...expanded.map((r) => (r[i] ?? '').length)));
  return (
    expanded
      .map((r) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + gap)))
          .join('')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

/** Aligned "Key:   value" lines like `cilium-dbg status`. */
export function keyValues(pairs: Array<[string, string]>, keyWidth = 0): string {
  const w = Math.max(keyWidth, ...pairs.map(([k]) => k.length)) + 2;
  return pairs.map(([k, v]) => `${(k + ':').padEnd(w)}${v}`).join('\n') + '\n';
}
