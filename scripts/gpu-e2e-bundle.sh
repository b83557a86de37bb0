#!/usr/bin/env bash
# Builds the bundle that scripts/gpu-e2e.sh needs on a GPU machine that has an NVIDIA
# driver but no Docker, no nvidia-ctk and no network: everything is carried in.
#
# Run here (Debian bookworm, root), from anywhere in the repository:
#   scripts/gpu-e2e-bundle.sh
# It writes .gpu-e2e/ in the repository root (git-ignored):
#   .gpu-e2e/bundle.tar.xz   bundle/bin: cdi-harness (release, stripped copy), dockerd,
#                            docker-proxy, containerd, containerd-shim-runc-v2, runc,
#                            busybox (static), docker (CLI, stripped copy, if it fits);
#                            bundle/lib: libseccomp.so.2 and dockerd's other non-glibc
#                            libraries (used only for those the GPU machine lacks);
#                            bundle/scenarios/seed.toml, bundle/MANIFEST, bundle/SHA256SUMS
#   .gpu-e2e/gpu-e2e.sh      the end-to-end script itself
#   .gpu-e2e/busybox         static busybox, uncompressed: `busybox xz -d` unpacks the
#                            bundle where the GPU machine has no xz
#   .gpu-e2e/MANIFEST        what is inside (also inside the archive)
#   .gpu-e2e/INPUTS          checksum of the binaries: an unchanged set is not repacked
# The device tool carries at most 64 MiB (working tree included), so the archive is xz -9
# and the docker CLI goes in only while the whole directory stays under $LIMIT_MIB.
set -euo pipefail

LIMIT_MIB=${GPU_E2E_BUNDLE_LIMIT_MIB:-58}
# runc's RUNPATH in the bundle. `runc init` (runc re-executing itself) runs with a scrubbed
# environment, so LD_LIBRARY_PATH cannot bring it the bundled libseccomp on a host that
# lacks one; gpu-e2e.sh links this directory to the bundled copy only in that case, and
# a directory that does not exist is skipped by the loader.
RUNC_RUNPATH=/run/cdi-harness-gpu-e2e/lib
ENGINE=${GPU_E2E_ENGINE_DIR:-/opt/cdi-harness/engines/unstable}

here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
repo=$(cd "$here/.." && pwd)
out="$repo/.gpu-e2e"
cd "$repo"

log() { printf 'gpu-e2e-bundle: %s\n' "$*" >&2; }
fail() { printf 'gpu-e2e-bundle: error: %s\n' "$*" >&2; exit 1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

if ! command -v patchelf >/dev/null; then
  log "installing patchelf (to give the bundled runc its RUNPATH)"
  apt-get install -y -qq --no-install-recommends patchelf >&2 || log "no patchelf: runc goes unpatched"
fi
for tool in xz tar strip ldd sha256sum objdump cargo; do
  command -v "$tool" >/dev/null || fail "\`$tool\` is missing (apt-get install xz-utils binutils, or the Rust toolchain for cargo)"
done

# 1. The harness, release build.
log "cargo build --release -p cdi-harness"
cargo build --release -p cdi-harness >&2
harness="$repo/target/release/cdi-harness"
[ -x "$harness" ] || fail "$harness was not built"

# 2. The engine (Debian unstable's dockerd 28 + containerd) as .ci/install-engine unpacks it.
if [ ! -x "$ENGINE/usr/sbin/dockerd" ] || [ ! -x "$ENGINE/usr/bin/containerd" ]; then
  log "no engine in $ENGINE: running .ci/install-engine"
  "$repo/.ci/install-engine" >/dev/null
fi
dockerd="$ENGINE/usr/sbin/dockerd"
docker_proxy="$ENGINE/usr/sbin/docker-proxy"
containerd="$ENGINE/usr/bin/containerd"
shim="$ENGINE/usr/bin/containerd-shim-runc-v2"
runc=/usr/sbin/runc
busybox=/bin/busybox
for f in "$dockerd" "$docker_proxy" "$containerd" "$shim" "$runc" "$busybox"; do
  [ -x "$f" ] || fail "$f is missing (run .ci/install-engine)"
done
[[ $(ldd "$busybox" 2>&1) == *'not a dynamic executable'* ]] || fail "$busybox is not static (apt-get install busybox-static)"
cli=$(command -v docker || true)
if [ -z "$cli" ] || [ ! -x "$cli" ]; then log "no docker CLI on PATH: the bundle goes without it"; cli=""; fi

stage=$(mktemp -d /tmp/gpu-e2e-bundle.XXXXXX)
trap 'rm -rf "$stage"' EXIT
b="$stage/bundle"
mkdir -p "$b/bin" "$b/lib" "$b/scenarios"

cp "$dockerd" "$docker_proxy" "$containerd" "$shim" "$runc" "$b/bin/"
runc_runpath=none
if command -v patchelf >/dev/null && patchelf --set-rpath "$RUNC_RUNPATH" "$b/bin/runc" \
  && "$b/bin/runc" --version >/dev/null; then
  runc_runpath=$RUNC_RUNPATH
else
  cp "$runc" "$b/bin/runc"
fi
cp "$busybox" "$b/bin/busybox"
strip -o "$b/bin/cdi-harness" "$harness"
cp "$repo/scenarios/seed.toml" "$b/scenarios/seed.toml"

# 3. Libraries: runc's libseccomp and dockerd's (libsystemd, libcap, libgcrypt, …), every
# one except glibc's own, as resolved files named by their soname. gpu-e2e.sh puts a
# library on LD_LIBRARY_PATH only where the GPU machine lacks it (or has too old a one).
glibc_own='^(linux-vdso|ld-linux|libc\.so|libm\.so|libpthread|libdl\.so|librt\.so|libresolv|libutil\.so)'
for bin in "$runc" "$dockerd" "$containerd" "$shim" "$docker_proxy" "$harness"; do
  ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }'
done | sort -u | while read -r soname path; do
  if [[ $soname =~ $glibc_own ]]; then continue; fi
  cp -L "$path" "$b/lib/$soname"
done
[ -f "$b/lib/libseccomp.so.2" ] || fail "runc's libseccomp.so.2 was not found by ldd"

# 4. What the binaries need from the GPU machine's glibc.
need_glibc=$(for f in "$b"/bin/*; do objdump -T "$f" 2>/dev/null; done \
  | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)

manifest() {
  local with_cli=$1
  {
    echo "# cdi-harness GPU end-to-end bundle (scripts/gpu-e2e-bundle.sh)"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME"), glibc $(getconf GNU_LIBC_VERSION | awk '{print $2}')"
    echo "source: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet HEAD 2>/dev/null || echo ' (working tree with uncommitted changes)')"
    echo "glibc-required: $need_glibc"
    echo "docker-cli: $with_cli"
    echo "runc-runpath: $runc_runpath"
    echo "cdi-harness: $("$harness" --version)"
    echo "dockerd: $("$dockerd" --version)"
    echo "containerd: $("$containerd" --version)"
    echo "runc: $("$runc" --version | head -1)"
    echo "busybox: $("$busybox" 2>&1 | head -1)"
    if [ "$with_cli" = yes ]; then echo "docker: $("$cli" --version)"; fi
    echo "libs: $(cd "$b/lib" && ls | tr '\n' ' ')"
  } >"$b/MANIFEST"
  (cd "$b" && find bin lib scenarios MANIFEST -type f | sort | xargs sha256sum >SHA256SUMS)
}

pack() {
  rm -f "$stage/bundle.tar.xz"
  tar -C "$stage" --owner=0 --group=0 --numeric-owner -cf - bundle \
    | xz -9 -T2 >"$stage/bundle.tar.xz"
}

total_size() {
  # The directory as it will travel: archive, script, busybox, manifest.
  local archive
  archive=$(stat -c %s "$stage/bundle.tar.xz")
  echo $((archive + $(stat -c %s "$repo/scripts/gpu-e2e.sh") + $(stat -c %s "$busybox") + $(stat -c %s "$b/MANIFEST")))
}

with_cli=no
if [ -n "$cli" ]; then
  strip -o "$b/bin/docker" "$cli" 2>/dev/null || cp "$cli" "$b/bin/docker"
  with_cli=yes
fi
manifest "$with_cli"
# The same binaries as the bundle already in .gpu-e2e: keep its archive (xz -9 takes minutes)
# and refresh only the script. GPU_E2E_BUNDLE_FORCE=1 repacks anyway.
key=$(grep -v ' MANIFEST$' "$b/SHA256SUMS" | sha256sum | cut -d' ' -f1)
if [ -z "${GPU_E2E_BUNDLE_FORCE:-}" ] && [ -f "$out/bundle.tar.xz" ] && [ "$(cat "$out/INPUTS" 2>/dev/null)" = "$key" ]; then
  log "binaries unchanged since the last bundle: keeping $out/bundle.tar.xz, refreshing gpu-e2e.sh"
  cp "$repo/scripts/gpu-e2e.sh" "$out/gpu-e2e.sh"
  chmod 755 "$out/gpu-e2e.sh"
  echo "bundle: $out ($(mib "$(du -sb "$out" | cut -f1)") in all; bundle.tar.xz $(mib "$(stat -c %s "$out/bundle.tar.xz")"); $(grep '^docker-cli:' "$out/MANIFEST" | tr -d '\n'); unchanged)"
  exit 0
fi
log "compressing (xz -9 -T2; a minute or two)…"
pack
size=$(total_size)
log "with docker CLI=$with_cli: $(mib "$size")"
if [ "$with_cli" = yes ] && [ "$size" -gt $((LIMIT_MIB * 1048576)) ]; then
  log "over $LIMIT_MIB MiB: dropping the docker CLI (gpu-e2e.sh then skips info_cli)"
  rm -f "$b/bin/docker"
  with_cli=no
  manifest no
  pack
  size=$(total_size)
fi
[ "$size" -le $((LIMIT_MIB * 1048576)) ] || fail "the bundle is $(mib "$size"), over $LIMIT_MIB MiB"

# 5. Publish: replace only what this script owns in .gpu-e2e/.
mkdir -p "$out"
rm -rf "$out/bundle" "$out/bundle.tar.xz" "$out/gpu-e2e.sh" "$out/busybox" "$out/MANIFEST" "$out/INPUTS"
cp "$stage/bundle.tar.xz" "$out/bundle.tar.xz"
cp "$repo/scripts/gpu-e2e.sh" "$out/gpu-e2e.sh"
chmod 755 "$out/gpu-e2e.sh"
cp "$busybox" "$out/busybox"
cp "$b/MANIFEST" "$out/MANIFEST"
echo "$key" >"$out/INPUTS"

log "contents:"
tar -tvJf "$out/bundle.tar.xz" | awk '{ printf "  %10d  %s\n", $3, $6 }' >&2
cat "$out/MANIFEST" >&2
echo "bundle: $out ($(mib "$(du -sb "$out" | cut -f1)") in all; bundle.tar.xz $(mib "$(stat -c %s "$out/bundle.tar.xz")"); docker CLI: $with_cli)"
