// Public surface of src/kernel/bpf: object specs and loading, maps, programs, tcx/tc links, codecs, ELF/BTF.
export { array, be16, be32, bytes, i32, structCodec, u16, u32, u64, u8 } from './codec.js';
export type { Codec, FieldLayout, StructCodec, StructFields } from './codec.js';
export { ElfFile } from './elf.js';
export type { ElfSection, ElfSymbol } from './elf.js';
export { Btf } from './btf.js';
export type { BtfKind, BtfMember, BtfType, DatasecVar, StructLayout } from './btf.js';
export { Collection, CollectionSpec } from './collection.js';
export type { ConstantValue, LoadOptions, MapSpec, ProgramSpec } from './collection.js';
export { BpfMap, TypedMap, possibleCpus } from './map.js';
export type { UpdateFlags } from './map.js';
export { BpfProgram, SKB_CTX_SIZE, decodeSkbCtx, skbCtx } from './program.js';
export type { RunOptions, RunResult } from './program.js';
export { Link, haveTcx } from './link.js';
export type { AttachMode, AttachOptions, Direction, LinkInfo } from './link.js';
export { BPF_FS_MAGIC, DEFAULT_BPFFS, ensureBpffs, isBpffs, removePinned } from './fs.js';
export { BPF_LINK_TYPE_TCX, BPF_TCX_EGRESS, BPF_TCX_INGRESS } from './syscall.js';
export { queryTcx } from './query.js';
export type { TcxAttachment } from './query.js';
