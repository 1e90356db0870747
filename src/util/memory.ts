// The process's memory as a benchmark wants it: RSS, and the V8 heap after a full collection (forced through the
// runtime flag, so no --expose-gc on the command line is needed), which the heap's growth slack does not blur.
import v8 from 'node:v8';
import vm from 'node:vm';

let gc: (() => void) | undefined;

function collector(): () => void {
  if (!gc) {
    v8.setFlagsFromString('--expose-gc');
    gc = vm.runInNewContext('gc') as () => void;
  }
  return gc;
}

export interface MemoryView {
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  gc: boolean;
}

/** Bytes; with gcFirst a full garbage collection runs first. */
export function memoryView(gcFirst: boolean): MemoryView {
  if (gcFirst) collector()();
  const m = process.memoryUsage();
  return { rss: m.rss, heapTotal: m.heapTotal, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, gc: gcFirst };
}
