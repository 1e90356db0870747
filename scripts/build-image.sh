#!/bin/bash
# Builds Tendril's container image without a registry or docker: a docker-archive tarball (what
# `ctr images import` and `docker load` take) made from the installed files of this checkout: the node
# binary and the shared libraries it and the tools the agent runs need (ldd), dist/, node_modules (production deps), the BPF
# objects, bin/tendril-cni. Usage: scripts/build-image.sh [OUT.tar] (default build/image/tendril.tar);
# env TENDRIL_IMAGE (default localhost/tendril:dev). Cached: when no input changed since the last build (same
# input digest), the tarball is left as it is. Build first (npm run build). stdout: the tarball's path.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
OUT=${1:-$ROOT/build/image/tendril.tar}
IMAGE=${TENDRIL_IMAGE:-localhost/tendril:dev}
log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
for f in dist/src/cli/main.js build/bpf bin/tendril-cni node_modules package.json; do
  [[ -e $ROOT/$f ]] || die "$f missing: run npm run build first"
done
NODE=$(command -v node) || die "node not found"
# The tools the agent and the CNI plugin's helpers execute (iproute2, iptables for the iptables masquerade
# fallback, nsenter), a shell for debugging, and libbpf (loaded through koffi).
TOOLS=()
for t in ip tc iptables iptables-save iptables-restore nsenter sh mount cp mv ls cat; do
  p=$(command -v "$t") || die "$t not found on this machine"
  TOOLS+=("$p")
done
LIBBPF=$(ldconfig -p | awk '/libbpf\.so\.1 .*x86-64/ && !f { print $NF; f = 1 }') # no early exit: SIGPIPE under pipefail
[[ -n $LIBBPF ]] || die "libbpf.so.1 not found (apt-get install libbpf1)"

# input digest: every file's path, size and mtime (content of the tool binaries by path + mtime too)
digest=$( { cd "$ROOT" && find dist build/bpf bin node_modules proto install/kubernetes/crds package.json package-lock.json -type f -printf '%p %s %T@\n' | sort
  for f in "$NODE" "${TOOLS[@]}" "$LIBBPF"; do stat -L -c "%n %s %Y" "$f"; done; echo "$IMAGE"; sha256sum "$0"; } | sha256sum | cut -c1-64)
if [[ -f $OUT && -f $OUT.digest && $(<"$OUT.digest") == "$digest" ]]; then
  log "$OUT is up to date ($IMAGE)"
  echo "$OUT"
  exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tendril-image.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
R=$WORK/rootfs
mkdir -p "$R"/{opt/tendril/bin,opt/tendril/build,usr/bin,usr/sbin,usr/lib,usr/lib64,tmp,proc,sys,dev,etc,run,var/lib/tendril}
# merged /usr, as Debian 12: /bin/sh, /lib/x86_64-linux-gnu/... resolve as on the host
for d in bin sbin lib lib64; do ln -s "usr/$d" "$R/$d"; done
ln -s ../run "$R/var/run"
chmod 1777 "$R/tmp"
copy_with_libs() { # copy_with_libs FILE...: the files at their paths, and each one's shared libraries
  local f l
  for f; do
    f=$(readlink -f "$f")
    mkdir -p "$R$(dirname "$f")"
    cp -a "$f" "$R$f"
    while read -r l; do
      [[ -e $R$l ]] && continue
      mkdir -p "$R$(dirname "$l")"
      cp -aL "$l" "$R$l"
    done < <(ldd "$f" 2>/dev/null | grep -o '/[^ ]*' || true)
  done
}
copy_with_libs "$NODE" "${TOOLS[@]}" "$LIBBPF"
# the names the tools are called by (PATH: /usr/sbin:/usr/bin:/sbin:/bin)
for p in "$NODE" "${TOOLS[@]}"; do
  real=$(readlink -f "$p")
  [[ $real == "$p" ]] || { mkdir -p "$R$(dirname "$p")"; ln -sfn "$real" "$R$p"; }
  ln -sfn "$real" "$R/usr/sbin/$(basename "$p")" 2>/dev/null || true
done
# ld.so, by its canonical path, and the loader cache so that dlopen (koffi: libbpf.so.1) finds the libraries
[[ -e $R/lib64/ld-linux-x86-64.so.2 ]] || cp -aL /lib64/ld-linux-x86-64.so.2 "$R/lib64/"
# iptables-nft's and iptables-legacy's extension modules
for d in /usr/lib/x86_64-linux-gnu/xtables /usr/lib/xtables; do [[ -d $d ]] && { mkdir -p "$R$d"; cp -a "$d/." "$R$d/"; }; done
ldconfig -r "$R" 2>/dev/null || true
cp -a "$ROOT/package.json" "$ROOT/dist" "$ROOT/proto" "$R/opt/tendril/"
# production dependencies only: a copy of node_modules pruned by npm from the lockfile (offline: nothing is
# fetched), then what no runtime loads: koffi's prebuilt modules for other platforms (it loads
# build/koffi/linux_x64/koffi.node here, glibc), type declarations (@types packages, *.d.ts) and source maps.
cp -a "$ROOT/package-lock.json" "$ROOT/node_modules" "$R/opt/tendril/"
(cd "$R/opt/tendril" && npm prune --omit=dev --ignore-scripts --offline --no-audit --no-fund --loglevel=error >&2) || die "npm prune --omit=dev failed"
[[ ! -e $R/opt/tendril/node_modules/typescript ]] || die "npm prune left devDependencies in the image"
if [[ -d $R/opt/tendril/node_modules/koffi/build/koffi/linux_x64 ]]; then
  find "$R/opt/tendril/node_modules/koffi/build/koffi" -mindepth 1 -maxdepth 1 -type d ! -name linux_x64 -exec rm -rf {} +
fi
find "$R/opt/tendril/node_modules" -depth -type d -name '@types' -exec rm -rf {} +
find "$R/opt/tendril/node_modules" -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \) -delete
rm -f "$R/opt/tendril/package-lock.json"
# the system's CA bundle (Node reads it at start; the apiserver's CA comes from the service account)
[[ -f /etc/ssl/certs/ca-certificates.crt ]] && { mkdir -p "$R/etc/ssl/certs"; cp -L /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/"; }
cp -a "$ROOT/build/bpf" "$R/opt/tendril/build/bpf"
cp -a "$ROOT/bin/tendril" "$ROOT/bin/tendril-cni" "$R/opt/tendril/bin/"
[[ -d $ROOT/install/kubernetes/crds ]] && { mkdir -p "$R/opt/tendril/install/kubernetes"; cp -a "$ROOT/install/kubernetes/crds" "$R/opt/tendril/install/kubernetes/"; }
ln -sfn /opt/tendril/bin/tendril "$R/usr/bin/tendril"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\n' >"$R/etc/group"
printf '127.0.0.1 localhost\n' >"$R/etc/hosts"

# one layer, reproducible (sorted names, fixed owners and mtimes): same inputs, same digest
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2026-01-01 00:00:00Z' -C "$R" -cf "$WORK/layer.tar" .
layer=$(sha256sum "$WORK/layer.tar" | cut -c1-64)
mkdir -p "$WORK/img/$layer"
mv "$WORK/layer.tar" "$WORK/img/$layer/layer.tar"
cat >"$WORK/config.json" <<JSON
{"architecture":"amd64","os":"linux","created":"2026-01-01T00:00:00Z",
 "config":{"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin","NODE_ENV=production"],"WorkingDir":"/opt/tendril",
  "Entrypoint":["/usr/bin/node","/opt/tendril/dist/src/cli/main.js"],"Cmd":["agent"],
  "Labels":{"org.opencontainers.image.title":"tendril"}},
 "rootfs":{"type":"layers","diff_ids":["sha256:$layer"]},
 "history":[{"created":"2026-01-01T00:00:00Z","created_by":"scripts/build-image.sh"}]}
JSON
cfg=$(sha256sum "$WORK/config.json" | cut -c1-64)
cp "$WORK/config.json" "$WORK/img/$cfg.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' "$cfg" "$IMAGE" "$layer" >"$WORK/img/manifest.json"
mkdir -p "$(dirname "$OUT")"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2026-01-01 00:00:00Z' -C "$WORK/img" -cf "$OUT.tmp" .
mv "$OUT.tmp" "$OUT"
echo "$digest" >"$OUT.digest"
log "$IMAGE: $(du -h "$OUT" | cut -f1) in $OUT (layer sha256:${layer:0:12})"
echo "$OUT"
