#!/usr/bin/env bash
# Installs every system package Tendril needs on Debian 12, then npm deps and the build. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(clang llvm libbpf-dev linux-libc-dev gcc make libc6-dev iproute2 bpftool iputils-ping curl
      iperf3 containernetworking-plugins etcd-server etcd-client tcpdump socat util-linux iptables
      # the Kubernetes kit (../shared/k8s): control plane and kubelet node
      xz-utils openssl containerd runc busybox-static)

if [ "$(id -u)" != 0 ]; then
  echo "setup: must run as root (installs system packages, loads BPF programs)" >&2
  exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# etcd-server's package starts a system-wide etcd; Tendril starts its own on loopback when needed.
if command -v systemctl >/dev/null 2>&1 && systemctl is-enabled etcd >/dev/null 2>&1; then
  systemctl disable --now etcd >/dev/null 2>&1 || true
fi

# bpffs: pinned maps and links live under /sys/fs/bpf/tendril.
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
  mkdir -p /sys/fs/bpf
  mount -t bpf bpf /sys/fs/bpf
fi

# npm deps: reinstall only when package-lock.json changed.
stamp=node_modules/.tendril-lock-sha
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

npm run -s build
