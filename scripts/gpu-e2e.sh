#!/usr/bin/env bash
# shellcheck disable=SC2317,SC2015,SC2012  # trap functions; deliberate a && b || fail; ls of known names
# End-to-end proof on a real GPU machine that Docker containers get its NVIDIA GPUs through
# CDI, checked by cdi-harness's `host` backend. For a machine with an NVIDIA driver and
# GPU(s) but no Docker, no nvidia-ctk and no network: everything else comes from the
# bundle that scripts/gpu-e2e-bundle.sh builds (.gpu-e2e/: bundle.tar.xz + this script).
#
#   1. preflight: prints the GPU facts (nvidia-smi, driver, device nodes, kernel, overlayfs,
#      cgroups, glibc, whether the bundled engine's libraries resolve); a missing
#      prerequisite is named and the script exits 2
#   2. a private CDI-enabled dockerd from the bundle (own socket, data root and exec root in
#      a temp dir; no iptables, no bridge; vfs storage without overlayfs)
#   3. a minimal real CDI spec written from the host, as nvidia-ctk would (nvidia.com/gpu:
#      one device per GPU by index, `all`; /dev/nvidiactl and UVM nodes; the host's
#      nvidia-smi and libnvidia-ml.so* mounted), validated by `cdi-harness cdi validate`
#   4. an image built locally: static busybox + the glibc files the host's nvidia-smi needs
#   5. `cdi-harness run --backend host` on the seed scenario with the machine's GPU count
#      (and on a machine with 4 or more GPUs the multi-gpu scenario too),
#      twice: the first run records the host snapshot, the second must pass entirely
#   6. cleanup, always: engine stopped, mounts under the temp dir undone, temp dir removed
#
# usage: gpu-e2e.sh [--bundle DIR|FILE.tar.xz] [--fake-gpu [--fake-gpus N]] [--keep]
#   OUT_DIR   where reports, the snapshot, the spec and logs go (default: $OUT if set,
#             else a new /tmp/gpu-e2e-out.XXXXXX that is kept)
#   GPU_E2E_HARNESS (an absolute path: use this cdi-harness instead of the bundled one)
#   GPU_E2E_TMPDIR (default /tmp), GPU_E2E_STORAGE_DRIVER (force one), GPU_E2E_KEEP=1
#             (keep the temp dir), GPU_E2E_BUNDLE (as --bundle)
# Exit: 0 every check of the second harness run passed, 1 a check failed,
#       2 could not run (preflight or setup failure); 143/130/129 when stopped by a signal
#       (after the same cleanup).
#
# --fake-gpu is a DEBUG mode for machines without a GPU: in a private mount namespace it
# fakes nvidia-smi with a small script, libnvidia-ml with a text file and /dev/nvidia* with
# bind mounts of /dev/null. Everything it prints is labelled FAKE; it proves the script,
# never a GPU.
set -uo pipefail
shopt -s nullglob

IMAGE=cdi-harness/gpu-e2e:local
SPEC_FILE=nvidia-container-toolkit.json
script_path=$(readlink -f "${BASH_SOURCE[0]}")
script_dir=$(dirname "$script_path")

fake=0
fake_gpus=${GPU_E2E_FAKE_GPUS:-2}
bundle_arg=${GPU_E2E_BUNDLE:-}
keep=${GPU_E2E_KEEP:-0}

usage() { sed -n '3,/^set -uo/p' "$script_path" | sed '$d; s/^# \{0,1\}//'; }

orig_args=("$@")
while [ $# -gt 0 ]; do
  case $1 in
    --bundle) [ $# -ge 2 ] || { echo "--bundle needs a path" >&2; exit 2; }; bundle_arg=$2; shift ;;
    --bundle=*) bundle_arg=${1#--bundle=} ;;
    --fake-gpu) fake=1 ;;
    --fake-gpus) [ $# -ge 2 ] || { echo "--fake-gpus needs a number" >&2; exit 2; }; fake=1; fake_gpus=$2; shift ;;
    --fake-gpus=*) fake=1; fake_gpus=${1#--fake-gpus=} ;;
    --keep) keep=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gpu-e2e.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case $fake_gpus in '' | *[!0-9]*) echo "--fake-gpus: not a number: $fake_gpus" >&2; exit 2 ;; esac
[ "$fake_gpus" -ge 1 ] && [ "$fake_gpus" -le 16 ] || { echo "--fake-gpus: 1 to 16" >&2; exit 2; }

# ---------------------------------------------------------------------------------------
# Outer process: the log (tee to $OUT_DIR/gpu-e2e.log) and, for --fake-gpu, the private
# mount namespace. The work happens in a child, so that the log gets every last line.
# ---------------------------------------------------------------------------------------
if [ -z "${GPU_E2E_CHILD:-}" ]; then
  OUT_DIR=${OUT_DIR:-${OUT:-}}
  if [ -z "$OUT_DIR" ]; then
    OUT_DIR=$(mktemp -d /tmp/gpu-e2e-out.XXXXXX) || exit 2
  fi
  mkdir -p "$OUT_DIR" || { echo "cannot create OUT_DIR $OUT_DIR" >&2; exit 2; }
  OUT_DIR=$(cd "$OUT_DIR" && pwd)
  export OUT_DIR GPU_E2E_CHILD=1
  log_name=gpu-e2e.log
  [ "$fake" = 1 ] && log_name=gpu-e2e-FAKE.log
  : >"$OUT_DIR/$log_name"
  child_cmd=("$BASH" "$script_path" "${orig_args[@]}")
  if [ "$fake" = 1 ]; then
    if ! command -v unshare >/dev/null; then
      echo "--fake-gpu needs \`unshare\` (util-linux)" | tee -a "$OUT_DIR/$log_name"
      exit 2
    fi
    # unshare execs bash in the new namespace: the child's pid stays the one signalled.
    child_cmd=(unshare --mount --propagation private -- "${child_cmd[@]}")
  fi
  exec {log_fd}> >(exec tee -i -a "$OUT_DIR/$log_name")
  tee_pid=$!
  "${child_cmd[@]}" >&"$log_fd" 2>&1 &
  child=$!
  exec {log_fd}>&-
  # A signal to this process (a timeout, Ctrl-C) reaches the child, which cleans up.
  trap 'kill -TERM "$child" 2>/dev/null' INT TERM HUP
  while :; do
    wait "$child"
    rc=$?
    # Interrupted by a trapped signal while the child still runs: wait again.
    [ "$rc" -gt 128 ] && kill -0 "$child" 2>/dev/null && continue
    break
  done
  wait "$tee_pid" 2>/dev/null
  exit "$rc"
fi

# ---------------------------------------------------------------------------------------
# Output helpers
# ---------------------------------------------------------------------------------------
label=""
tag=gpu-e2e
if [ "$fake" = 1 ]; then
  label="[FAKE GPU] "
  tag=gpu-e2e-FAKE
fi
section() { printf '\n=== %s%s\n' "$label" "$*"; }
fact() { printf '  %-26s %s\n' "$1:" "$2"; }
indent() { sed 's/^/    /'; }
problems=()
missing() {
  problems+=("$1")
  printf '  MISSING: %s\n' "$1"
}
setup_fail() {
  printf '\n%sSETUP FAILED (exit 2): %s\n' "$label" "$*"
  exit 2
}

# ---------------------------------------------------------------------------------------
# Temp dir and cleanup
# ---------------------------------------------------------------------------------------
tmp=$(mktemp -d "${GPU_E2E_TMPDIR:-/tmp}/gpue2e.XXXXXX") || { echo "cannot create a temp dir" >&2; exit 2; }
chmod 755 "$tmp"
sock="$tmp/d.sock"
dockerd_pid=""
mounted_cgroup=0
runpath_link=""  # runc's RUNPATH directory, when this script links it to the bundled libraries
B=""          # the unpacked bundle
docker=""     # the bundled docker CLI, if any

# Processes of this run's engine: engine programs whose arguments name this temp dir.
engine_pids() {
  local p comm
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = "$$" ] && continue
    comm=$(cat "/proc/$p/comm" 2>/dev/null) || continue
    case $comm in dockerd | containerd* | runc | docker-proxy) ;; *) continue ;; esac
    tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -qF "$tmp/" && echo "$p"
  done
}

mounts_under_tmp() {
  awk -v root="$tmp/" 'index($5, root) == 1 { print length($5), $5 }' /proc/self/mountinfo \
    | sort -rn | cut -d' ' -f2-
}

stop_engine() {
  if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
    if [ -n "$docker" ]; then
      local ids
      ids=$(timeout 10 "$docker" --host "unix://$sock" ps -q 2>/dev/null)
      # shellcheck disable=SC2086
      [ -n "$ids" ] && timeout 10 "$docker" --host "unix://$sock" kill $ids >/dev/null 2>&1
    fi
    kill -TERM "$dockerd_pid" 2>/dev/null
    local i
    for i in $(seq 200); do
      kill -0 "$dockerd_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$dockerd_pid" 2>/dev/null; then
      echo "  dockerd did not stop within 20 s: SIGKILL"
      kill -KILL "$dockerd_pid" 2>/dev/null
    fi
    wait "$dockerd_pid" 2>/dev/null
  fi
  dockerd_pid=""
  # containerd and shims of this engine that outlived dockerd.
  local left
  left=$(engine_pids)
  if [ -n "$left" ]; then
    sleep 2
    left=$(engine_pids)
    # shellcheck disable=SC2086
    [ -n "$left" ] && { echo "  killing leftover engine processes: ${left//$'\n'/ }"; kill -KILL $left 2>/dev/null; sleep 1; }
  fi
}

cleanup() {
  local rc=$?
  trap - EXIT
  trap '' INT TERM HUP  # cleanup is bounded (~30 s); a second signal must not cut it short
  set +e
  section "Cleanup"
  stop_engine
  if [ -f "$tmp/dockerd.log" ]; then cp "$tmp/dockerd.log" "$OUT_DIR/$tag.dockerd.log"; fi
  local m n=0
  for _pass in 1 2 3; do
    while IFS= read -r m; do
      [ -n "$m" ] || continue
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
      n=$((n + 1))
    done < <(mounts_under_tmp)
  done
  [ "$n" -gt 0 ] && echo "  unmounted $n leftover mount(s) under $tmp"
  if [ -n "$runpath_link" ] && [ -L "$runpath_link" ]; then
    rm -f "$runpath_link" && rmdir "$(dirname "$runpath_link")" 2>/dev/null
    echo "  removed $runpath_link"
  fi
  if [ "$mounted_cgroup" = 1 ]; then umount /sys/fs/cgroup 2>/dev/null && echo "  unmounted the cgroup2 mount this script made"; fi
  if [ "$keep" = 1 ]; then
    echo "  --keep: left $tmp in place"
  elif [ -n "$(mounts_under_tmp)" ]; then
    echo "  NOT removing $tmp: still mounted: $(mounts_under_tmp | tr '\n' ' ')"
  else
    rm -rf --one-file-system "$tmp" && echo "  removed $tmp"
  fi
  echo "  reports and logs: $OUT_DIR"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 130' INT
trap 'echo "terminated"; exit 143' TERM
trap 'echo "hangup"; exit 129' HUP

# ---------------------------------------------------------------------------------------
# --fake-gpu: a fake nvidia-smi, libnvidia-ml and /dev/nvidia* in this private namespace
# ---------------------------------------------------------------------------------------
nvml_search_override=""
fake_setup() {
  local fk="$tmp/fake" drv=999.99.99 n name e
  mkdir -p "$fk/bin" "$fk/lib"
  echo "FAKE libnvidia-ml written by gpu-e2e.sh --fake-gpu: not NVIDIA software" >"$fk/lib/libnvidia-ml.so.$drv"
  ln -s "libnvidia-ml.so.$drv" "$fk/lib/libnvidia-ml.so.1"
  ln -s libnvidia-ml.so.1 "$fk/lib/libnvidia-ml.so"
  sed -e "s|@LIB@|$fk/lib/libnvidia-ml.so.1|" -e "s|@DRIVER@|$drv|" >"$fk/bin/nvidia-smi" <<'EOF'
#!/bin/sh
# FAKE nvidia-smi written by gpu-e2e.sh --fake-gpu to exercise that script without a GPU.
# NOT NVIDIA software; it proves nothing about real hardware. Like the real one it lists
# the GPUs whose /dev/nvidiaN nodes exist, numbered from 0.
lib=@LIB@
drv=@DRIVER@
[ -e "$lib" ] || { echo "NVIDIA-SMI couldn't find libnvidia-ml.so library in your system. (FAKE nvidia-smi)"; exit 12; }
[ -e /dev/nvidiactl ] || { echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. (FAKE nvidia-smi)"; exit 9; }
mode=table
query=
for a in "$@"; do
  case $a in
    -L | --list-gpus) mode=list ;;
    --query-gpu=*) mode=query; query=${a#--query-gpu=} ;;
    --format=*) ;;
    *) echo "FAKE nvidia-smi: unsupported argument $a"; exit 2 ;;
  esac
done
[ $mode = table ] && printf '+ FAKE NVIDIA-SMI (gpu-e2e.sh --fake-gpu, not NVIDIA software)   Driver Version: %s +\n' "$drv"
n=0
m=0
while [ $m -lt 64 ]; do
  if [ -e /dev/nvidia$m ]; then
    uuid=$(printf 'GPU-fa4e0000-0000-4000-8000-%012d' $m)
    case $mode in
      list) printf 'GPU %d: NVIDIA FAKE GPU (UUID: %s)\n' $n "$uuid" ;;
      table) printf '| GPU %d  NVIDIA FAKE GPU  minor %d  %s |\n' $n $m "$uuid" ;;
      query)
        line=
        sep=
        old=$IFS
        IFS=,
        for f in $query; do
          case $f in
            index) v=$n ;;
            minor_number) v=$m ;;
            uuid) v=$uuid ;;
            name) v="NVIDIA FAKE GPU" ;;
            driver_version) v=$drv ;;
            pci.bus_id) v=$(printf '00000000:%02X:00.0' $((m + 1))) ;;
            *) v='[N/A]' ;;
          esac
          line="$line$sep$v"
          sep=', '
        done
        IFS=$old
        echo "$line"
        ;;
    esac
    n=$((n + 1))
  fi
  m=$((m + 1))
done
[ $n -gt 0 ] || { echo "No devices were found"; exit 6; }
exit 0
EOF
  chmod 755 "$fk/bin/nvidia-smi"
  PATH="$fk/bin:$PATH"
  nvml_search_override="$fk/lib"

  # A private /dev: a tmpfs holding bind mounts of every real /dev entry plus the fake
  # nodes, moved over /dev. Only this mount namespace sees it; the host's /dev is untouched.
  local stage="$tmp/fakedev"
  mkdir "$stage" && mount -t tmpfs -o mode=755 gpue2e-fakedev "$stage" || setup_fail "--fake-gpu: cannot mount a tmpfs for the fake /dev"
  for e in /dev/* /dev/.[!.]*; do
    name=${e#/dev/}
    if [ -L "$e" ]; then
      cp -P "$e" "$stage/$name"
    elif [ -d "$e" ]; then
      mkdir "$stage/$name" && mount --rbind "$e" "$stage/$name"
    else
      : >"$stage/$name" && mount --bind "$e" "$stage/$name"
    fi
  done
  for name in nvidiactl nvidia-uvm nvidia-uvm-tools $(seq -f 'nvidia%g' 0 $((fake_gpus - 1))); do
    : >"$stage/$name" && mount --bind /dev/null "$stage/$name"
  done
  mount --move "$stage" /dev || setup_fail "--fake-gpu: cannot move the fake /dev over /dev"
}

# ---------------------------------------------------------------------------------------
# Host facts
# ---------------------------------------------------------------------------------------
is_sys_dir() { # is $1 in the loader's default search path?
  local d
  for d in "${sys_dirs[@]}"; do [ "$d" = "$1" ] && return 0; done
  return 1
}

# ldd's resolved paths (the loader included), one a line.
ldd_paths() {
  ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }'
}

find_nvml() {
  local dirs=() d f
  if [ -n "$nvml_search_override" ]; then
    dirs=("$nvml_search_override")
  else
    f=$(ldconfig -p 2>/dev/null | awk '/libnvidia-ml\.so\.1 / && /x86-64/ { print $NF; exit }')
    [ -z "$f" ] && f=$(ldconfig -p 2>/dev/null | awk '/libnvidia-ml\.so\.1 / { print $NF; exit }')
    [ -n "$f" ] && dirs+=("$(dirname "$f")")
    dirs+=(/usr/lib/x86_64-linux-gnu /usr/local/nvidia/lib64 /usr/lib64 /lib/x86_64-linux-gnu)
  fi
  for d in "${dirs[@]}"; do
    f=("$d"/libnvidia-ml.so*)
    if [ ${#f[@]} -gt 0 ]; then
      nvml_dir=$d
      nvml_files=("${f[@]}")
      return 0
    fi
  done
  return 1
}

preflight_host() {
  section "Preflight: host"
  local t out rc
  [ "$(id -u)" = 0 ] || missing "root: dockerd, mounts and device nodes need it (run as root)"
  for t in tar awk sed grep mount umount readlink stat ldd sort seq timeout tr cut; do
    command -v "$t" >/dev/null || missing "host tool \`$t\`"
  done

  # GPUs
  nvsmi=$(command -v nvidia-smi || true)
  for t in /usr/bin /usr/local/bin /usr/local/nvidia/bin /opt/nvidia/bin; do
    [ -z "$nvsmi" ] && [ -x "$t/nvidia-smi" ] && { nvsmi="$t/nvidia-smi"; PATH="$PATH:$t"; }
  done
  gpu_index=() gpu_minor=() gpu_uuid=()
  if [ -z "$nvsmi" ]; then
    missing "nvidia-smi: not on PATH nor in /usr/bin, /usr/local/bin, /usr/local/nvidia/bin, /opt/nvidia/bin (no NVIDIA driver user space here: not a GPU machine?)"
  else
    fact "nvidia-smi" "$nvsmi -> $(readlink -f "$nvsmi")"
    out=$(timeout 60 nvidia-smi -L 2>&1)
    rc=$?
    echo "  nvidia-smi -L (exit $rc):"
    printf '%s\n' "$out" | indent
    [ $rc = 0 ] || missing "a working nvidia-smi: \`nvidia-smi -L\` exited $rc (driver not loaded?)"
    driver=$(timeout 30 nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
    fact "driver version" "${driver:-unknown}"
    local line i m u
    while IFS= read -r line; do
      IFS=', ' read -r i u <<<"$line"
      case $i in '' | *[!0-9]*) continue ;; esac
      # `minor_number` is no --query-gpu field (measured on driver 580): the minor
      # number, which names /dev/nvidiaN, is only in `nvidia-smi -q`.
      m=$(timeout 30 nvidia-smi -q -i "$i" 2>/dev/null | awk -F: '/Minor Number/ {gsub(/ /, "", $2); print $2; exit}')
      case $m in
        '' | *[!0-9]*)
          echo "  note: GPU $i has no minor number ($m): assuming /dev/nvidia$i"
          m=$i
          ;;
      esac
      gpu_index+=("$i") gpu_minor+=("$m") gpu_uuid+=("$u")
    done < <(timeout 30 nvidia-smi --query-gpu=index,uuid --format=csv,noheader 2>/dev/null)
    fact "GPUs" "${#gpu_index[@]}"
    for i in "${!gpu_index[@]}"; do
      fact "  GPU ${gpu_index[$i]}" "minor ${gpu_minor[$i]} (/dev/nvidia${gpu_minor[$i]}), ${gpu_uuid[$i]}"
    done
    [ ${#gpu_index[@]} -gt 0 ] || missing "GPUs: \`nvidia-smi --query-gpu=index,uuid\` lists none"
  fi

  # Device nodes
  echo "  device nodes:"
  local nodes=(/dev/nvidia*)
  if [ ${#nodes[@]} -gt 0 ]; then
    # shellcheck disable=SC2012
    ls -l "${nodes[@]}" 2>&1 | sort -u | indent
  else
    echo "    (no /dev/nvidia* at all)"
  fi
  [ -c /dev/nvidiactl ] || missing "/dev/nvidiactl: the driver's control node (is the nvidia kernel module loaded?)"
  for i in "${!gpu_minor[@]}"; do
    [ -c "/dev/nvidia${gpu_minor[$i]}" ] || missing "/dev/nvidia${gpu_minor[$i]}: the node of GPU ${gpu_index[$i]}"
  done
  for t in /dev/nvidia-uvm /dev/nvidia-uvm-tools /dev/nvidia-modeset; do
    if [ -c "$t" ]; then fact "$t" "present (goes into the spec)"; else fact "$t" "absent (left out of the spec)"; fi
  done

  # NVML
  nvml_dir="" nvml_files=()
  if find_nvml; then
    fact "libnvidia-ml" "$nvml_dir: $(for f in "${nvml_files[@]}"; do printf '%s ' "${f##*/}"; done)"
  else
    missing "libnvidia-ml.so*: not in ldconfig -p, /usr/lib/x86_64-linux-gnu, /usr/local/nvidia/lib64, /usr/lib64 (nvidia-smi needs it)"
  fi

  # The loader's default search path (decides whether the spec sets LD_LIBRARY_PATH).
  loader=""
  if [ -n "$nvsmi" ]; then loader=$(ldd_paths "$(readlink -f "$nvsmi")" | grep '/ld-linux' | head -1); fi
  [ -z "$loader" ] && [ -x /lib64/ld-linux-x86-64.so.2 ] && loader=/lib64/ld-linux-x86-64.so.2
  sys_dirs=()
  if [ -n "$loader" ]; then
    mapfile -t sys_dirs < <(env -u LD_LIBRARY_PATH "$loader" --help 2>/dev/null | awk '/\(system search path\)/ { print $1 }')
  fi
  fact "loader search path" "${sys_dirs[*]:-(unknown: the spec will set LD_LIBRARY_PATH)}"

  # Kernel, storage, cgroups, glibc, AppArmor, NVIDIA hooks
  fact "kernel" "$(uname -r)"
  if ! grep -qw overlay /proc/filesystems; then
    command -v modprobe >/dev/null && modprobe overlay 2>/dev/null
  fi
  local tmpfs_type
  tmpfs_type=$(stat -f -c %T "$tmp" 2>/dev/null)
  storage=""
  if grep -qw overlay /proc/filesystems; then
    if [ "$tmpfs_type" = overlayfs ]; then
      storage=vfs
      fact "overlayfs" "supported, but $tmp is on overlayfs itself: --storage-driver vfs"
    else
      fact "overlayfs" "supported (dockerd picks its storage driver; vfs if that fails)"
    fi
  else
    storage=vfs
    fact "overlayfs" "not in /proc/filesystems: --storage-driver vfs"
  fi
  if [ -n "${GPU_E2E_STORAGE_DRIVER:-}" ]; then
    storage=$GPU_E2E_STORAGE_DRIVER
    fact "storage driver" "$storage (GPU_E2E_STORAGE_DRIVER)"
  fi
  fact "temp dir" "$tmp ($tmpfs_type)"
  cgroup_mode=""
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    cgroup_mode=v2
    fact "cgroups" "v2; controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
  elif [ -d /sys/fs/cgroup/devices ] || [ -d /sys/fs/cgroup/memory ]; then
    cgroup_mode=v1
    fact "cgroups" "v1 ($(cd /sys/fs/cgroup && ls | tr '\n' ' ')) — dockerd 28 still runs on v1"
  elif grep -qw cgroup2 /proc/filesystems; then
    cgroup_mode=mount
    fact "cgroups" "none mounted; the kernel has cgroup2: this script will mount it on /sys/fs/cgroup"
  else
    missing "cgroups: /sys/fs/cgroup has neither v2 (cgroup.controllers) nor v1 hierarchies, and the kernel has no cgroup2"
  fi
  host_glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ print $2 }')
  [ -z "$host_glibc" ] && host_glibc=$(ldd --version 2>/dev/null | head -1 | awk '{ print $NF }')
  fact "glibc" "${host_glibc:-unknown}"
  if [ -r /sys/module/apparmor/parameters/enabled ] && [ "$(cat /sys/module/apparmor/parameters/enabled)" = Y ]; then
    if command -v apparmor_parser >/dev/null; then
      fact "AppArmor" "enabled (apparmor_parser present)"
    else
      fact "AppArmor" "enabled but no apparmor_parser: dockerd cannot load docker-default; containers may fail"
    fi
  else
    fact "AppArmor" "off"
  fi
  for t in nvidia-cdi-hook nvidia-container-runtime-hook nvidia-ctk docker dockerd; do
    fact "$t on PATH" "$(command -v "$t" || echo no)"
  done
}

# ---------------------------------------------------------------------------------------
# Bundle
# ---------------------------------------------------------------------------------------
unpack() { # archive: into $tmp/bundle; xz if the host has a working one, else the
  # static busybox shipped beside the archive
  local archive=$1 bb
  bb="$(dirname "$archive")/busybox"
  if command -v xz >/dev/null && xz -dc "$archive" | tar -C "$tmp" -xf - 2>/dev/null; then
    :
  elif [ -x "$bb" ] && "$bb" xz -dc "$archive" | tar -C "$tmp" -xf -; then
    fact "unpacked with" "$bb xz (no working xz on this host)"
  else
    missing "a way to unpack $archive: xz failed or is missing, and no busybox beside it worked"
    return 1
  fi
  B="$tmp/bundle"
}

dynamic_bins=()
preflight_bundle() {
  section "Preflight: bundle"
  local c archive="" dir=""
  local candidates=()
  if [ -n "$bundle_arg" ]; then
    candidates=("$bundle_arg")
  else
    candidates=("$script_dir" "$script_dir/../.gpu-e2e" "$PWD/.gpu-e2e")
  fi
  for c in "${candidates[@]}"; do
    if [ -f "$c" ] && [[ $c == *.tar.xz ]]; then archive=$c; break; fi
    if [ -f "$c/bundle.tar.xz" ]; then archive="$c/bundle.tar.xz"; break; fi
    if [ -x "$c/bin/dockerd" ]; then dir=$c; break; fi
    if [ -x "$c/bundle/bin/dockerd" ]; then dir="$c/bundle"; break; fi
  done
  if [ -n "$archive" ]; then
    archive=$(readlink -f "$archive")
    fact "bundle" "$archive ($(du -h "$archive" | cut -f1)), unpacking into $tmp/bundle"
    unpack "$archive" || return
  elif [ -n "$dir" ]; then
    B=$(readlink -f "$dir")
    fact "bundle" "$B (unpacked)"
  else
    missing "the bundle: no bundle.tar.xz or unpacked bundle in ${candidates[*]} (build it with scripts/gpu-e2e-bundle.sh and carry .gpu-e2e)"
    return
  fi
  if [ -f "$B/MANIFEST" ]; then sed 's/^/    /' "$B/MANIFEST"; fi
  if [ -f "$B/SHA256SUMS" ] && command -v sha256sum >/dev/null; then
    if (cd "$B" && sha256sum --quiet -c SHA256SUMS >/dev/null 2>&1); then
      fact "checksums" "ok"
    else
      missing "an intact bundle: SHA256SUMS does not match (re-copy .gpu-e2e)"
    fi
  fi
  local f
  for f in cdi-harness dockerd containerd containerd-shim-runc-v2 runc busybox; do
    [ -x "$B/bin/$f" ] || missing "bundle file bin/$f"
  done
  if [ -x "$B/bin/busybox" ] && ! "$B/bin/busybox" true 2>/dev/null; then
    missing "an executable bundle: $B/bin/busybox does not run (noexec mount? set GPU_E2E_TMPDIR to a directory on another filesystem)"
  fi
  if [ -x "$B/bin/docker" ]; then
    docker="$B/bin/docker"
    fact "docker CLI" "bundled ($("$docker" --version 2>/dev/null))"
  else
    fact "docker CLI" "not in the bundle: info_cli is skipped, the image is imported with curl"
    command -v curl >/dev/null || missing "curl (the bundle has no docker CLI to talk to the engine)"
  fi

  # Shared libraries: the host's first; a bundled copy only for what the host lacks (or
  # has too old), through a directory that holds just those, so host binaries see no change.
  libfb="$tmp/fallback-lib"
  mkdir -p "$libfb"
  for f in dockerd docker-proxy containerd containerd-shim-runc-v2 runc cdi-harness; do
    [ -x "$B/bin/$f" ] || continue
    [[ $(ldd "$B/bin/$f" 2>&1) == *"not a dynamic executable"* ]] && continue
    dynamic_bins+=("$f")
  done
  local changed out line soname libpath bad=()
  need_glibc=$(awk '/^glibc-required:/ { print $2 }' "$B/MANIFEST" 2>/dev/null)
  for _ in 1 2 3; do
    changed=0
    bad=()
    for f in "${dynamic_bins[@]}"; do
      if [ -n "$(ls -A "$libfb")" ]; then
        out=$(LD_LIBRARY_PATH="$libfb" ldd "$B/bin/$f" 2>&1)
      else
        out=$(env -u LD_LIBRARY_PATH ldd "$B/bin/$f" 2>&1)
      fi
      while IFS= read -r line; do
        soname=""
        if [[ $line =~ ^[[:space:]]*([^[:space:]]+)\ =\>\ not\ found ]]; then
          soname=${BASH_REMATCH[1]}
        elif [[ $line =~ :\ (/[^:]+):\ version\ .*\ not\ found ]]; then
          libpath=${BASH_REMATCH[1]}
          soname=${libpath##*/}
          [[ $libpath == "$libfb"/* ]] && { bad+=("$f: $line"); continue; }
        else
          continue
        fi
        if [[ $soname =~ ^(libc\.so|ld-linux|libm\.so|libpthread|libdl\.so|librt\.so) ]]; then
          bad+=("$f needs a newer glibc than ${host_glibc:-this host} (bundle built for ${need_glibc:-?}): $line")
        elif [ -f "$B/lib/$soname" ] && [ ! -e "$libfb/$soname" ]; then
          ln -s "$B/lib/$soname" "$libfb/$soname"
          changed=1
        else
          bad+=("$f: $line")
        fi
      done <<<"$out"
    done
    [ $changed = 0 ] && break
  done
  local verdict
  for f in "${dynamic_bins[@]}"; do
    verdict="all libraries resolve"
    for line in "${bad[@]}"; do [[ $line == "$f"[:\ ]* ]] && verdict="PROBLEM (below)"; done
    fact "ldd bin/$f" "$verdict"
  done
  if [ -n "$(ls -A "$libfb")" ]; then
    fact "bundled libraries used" "$(ls "$libfb" | tr '\n' ' ')(the host lacks them: on LD_LIBRARY_PATH of the engine binaries only)"
  else
    fact "bundled libraries used" "none (the host has every library)"
  fi
  fact "glibc needed by bundle" "${need_glibc:-?} (host: ${host_glibc:-?})"
  runc_runpath=$(awk '/^runc-runpath:/ { print $2 }' "$B/MANIFEST" 2>/dev/null)
  if [[ $runc_runpath != /* ]] && [ -x "$B/bin/runc" ] \
    && env -u LD_LIBRARY_PATH ldd "$B/bin/runc" 2>&1 | grep -q 'not found'; then
    missing "libraries for runc on this host ($(env -u LD_LIBRARY_PATH ldd "$B/bin/runc" 2>&1 | awk '/not found/ { print $1 }' | tr '\n' ' ')): \`runc init\` runs with a scrubbed environment, and this bundle's runc has no RUNPATH (rebuild it where patchelf is installed)"
  fi
  for line in "${bad[@]}"; do missing "shared library: $line"; done
}

# ---------------------------------------------------------------------------------------
# Setup: PATH, spec, engine, image, scenario
# ---------------------------------------------------------------------------------------
make_path_dir() {
  # $tmp/path: the engine's programs; a wrapper adds the fallback libraries to those that
  # need them, a symlink is used otherwise.
  local f
  mkdir -p "$tmp/path"
  for f in dockerd docker-proxy containerd containerd-shim-runc-v2 runc cdi-harness; do
    [ -x "$B/bin/$f" ] || continue
    if [ -n "$(ls -A "$libfb")" ] && env -u LD_LIBRARY_PATH ldd "$B/bin/$f" 2>&1 | grep -q 'not found'; then
      printf '#!/bin/sh\n# gpu-e2e.sh: %s with the bundled libraries this host lacks\nLD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec %s "$@"\n' \
        "$f" "$libfb" "$B/bin/$f" >"$tmp/path/$f"
      chmod 755 "$tmp/path/$f"
      fact "$f" "wrapper: LD_LIBRARY_PATH=$libfb"
    else
      ln -s "$B/bin/$f" "$tmp/path/$f"
    fi
  done
  # runc re-executes itself (`runc init`) with a scrubbed environment: the bundled
  # libraries reach it through its RUNPATH, linked here only when the host lacks them.
  if [ -n "$(ls -A "$libfb")" ] && [[ ${runc_runpath:-} == /* ]] \
    && env -u LD_LIBRARY_PATH ldd "$B/bin/runc" 2>&1 | grep -q 'not found'; then
    if [ -e "$runc_runpath" ] && [ ! -L "$runc_runpath" ]; then
      setup_fail "$runc_runpath exists and is not this script's link: remove it"
    fi
    mkdir -p "$(dirname "$runc_runpath")" && ln -sfn "$libfb" "$runc_runpath" \
      || setup_fail "cannot link $runc_runpath to $libfb"
    runpath_link=$runc_runpath
    fact "runc RUNPATH" "$runc_runpath -> $libfb (for runc init)"
  fi
  engine_path="$tmp/path:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  # GPU_E2E_HARNESS: a newer cdi-harness than the bundled one (same glibc needs).
  harness=${GPU_E2E_HARNESS:-$tmp/path/cdi-harness}
}

json_str() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; printf '"%s"' "$s"; }

write_spec() {
  section "CDI spec (written as nvidia-ctk would, from this host)"
  mkdir -p "$tmp/cdi"
  spec="$tmp/cdi/$SPEC_FILE"
  local i f node all="" devs="" common="" mounts="" env="" nl=$'\n'
  for i in "${!gpu_index[@]}"; do
    node="{\"path\": $(json_str "/dev/nvidia${gpu_minor[$i]}")}"
    devs+="    {\"name\": $(json_str "${gpu_index[$i]}"), \"containerEdits\": {\"deviceNodes\": [$node]}},"$'\n'
    all+="${all:+, }$node"
  done
  devs+="    {\"name\": \"all\", \"containerEdits\": {\"deviceNodes\": [$all]}}"
  for node in /dev/nvidiactl /dev/nvidia-uvm /dev/nvidia-uvm-tools /dev/nvidia-modeset; do
    [ -c "$node" ] && common+="${common:+,$nl}      {\"path\": $(json_str "$node")}"
  done
  local opts='["ro", "nosuid", "nodev", "bind"]'
  mounts="      {\"hostPath\": $(json_str "$(readlink -f "$nvsmi")"), \"containerPath\": \"/usr/bin/nvidia-smi\", \"options\": $opts}"
  for f in "${nvml_files[@]}"; do
    mounts+=",$nl      {\"hostPath\": $(json_str "$f"), \"containerPath\": $(json_str "$f"), \"options\": $opts}"
  done
  if is_sys_dir "$nvml_dir"; then
    fact "LD_LIBRARY_PATH" "not set: $nvml_dir is in the loader's default search path"
  else
    env="    \"env\": [$(json_str "LD_LIBRARY_PATH=$nvml_dir")],"$'\n'
    fact "LD_LIBRARY_PATH" "$nvml_dir (not in the loader's default search path)"
  fi
  cat >"$spec" <<EOF
{
  "cdiVersion": "0.5.0",
  "kind": "nvidia.com/gpu",
  "devices": [
$devs
  ],
  "containerEdits": {
$env    "deviceNodes": [
$common
    ],
    "mounts": [
$mounts
    ]
  }
}
EOF
  indent <"$spec"
  cp "$spec" "$OUT_DIR/$tag.$SPEC_FILE"
  local out rc
  out=$("$harness" cdi validate "$spec" 2>&1)
  rc=$?
  echo "  cdi-harness cdi validate (exit $rc):"
  printf '%s\n' "$out" | indent
  [ $rc = 0 ] || setup_fail "the generated CDI spec is invalid (see above)"
}

engine_ready() {
  if [ -n "$docker" ]; then
    timeout 5 "$docker" --host "unix://$sock" version --format '{{.Server.Version}}' >/dev/null 2>&1
  else
    timeout 5 curl -sf --unix-socket "$sock" http://docker/_ping >/dev/null 2>&1
  fi
}

start_engine() { # [vfs]
  local driver=${1:-} marker=${tmp##*/}
  marker=${marker//./-}
  cat >"$tmp/daemon.json" <<EOF
{
  "features": {"cdi": true},
  "cdi-spec-dirs": [$(json_str "$tmp/cdi")],
  "containerd-namespace": "$marker",
  "containerd-plugins-namespace": "$marker-plugins",
  "shutdown-timeout": 5
}
EOF
  local args=(--config-file "$tmp/daemon.json" --host "unix://$sock" --data-root "$tmp/data"
    --exec-root "$tmp/exec" --pidfile "$tmp/d.pid" --iptables=false --ip6tables=false --bridge=none)
  [ -n "$driver" ] && args+=(--storage-driver "$driver")
  echo "  daemon.json: $(tr -d '\n' <"$tmp/daemon.json" | tr -s ' ')"
  echo "  PATH=$engine_path dockerd ${args[*]}"
  PATH="$engine_path" "$tmp/path/dockerd" "${args[@]}" >"$tmp/dockerd.log" 2>&1 &
  dockerd_pid=$!
  local i
  for i in $(seq 120); do
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
      wait "$dockerd_pid"
      echo "  dockerd exited with status $? before it answered"
      break
    fi
    if engine_ready; then
      echo "  dockerd (pid $dockerd_pid) answers on $sock after ~$((i / 2)) s"
      return 0
    fi
    sleep 0.5
  done
  echo "  dockerd's log (errors and warnings, last 30):"
  grep -v -e 'level=info' -e 'level=debug' "$tmp/dockerd.log" | tail -n 30 | indent
  return 1
}

setup_engine() {
  section "Private CDI-enabled dockerd"
  if [ "$cgroup_mode" = mount ]; then
    mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup || setup_fail "cannot mount cgroup2 on /sys/fs/cgroup"
    mounted_cgroup=1
    echo "  mounted cgroup2 on /sys/fs/cgroup"
  fi
  export DOCKER_CONFIG="$tmp/docker-config"
  mkdir -p "$DOCKER_CONFIG"
  if ! start_engine "$storage"; then
    if [ "$storage" != vfs ]; then
      echo "  retrying with --storage-driver vfs"
      stop_engine
      for m in $(mounts_under_tmp); do umount -l "$m" 2>/dev/null; done
      rm -rf --one-file-system "$tmp/data" "$tmp/exec"
      storage=vfs
      start_engine vfs || setup_fail "dockerd did not start (its log is in $OUT_DIR/$tag.dockerd.log)"
    else
      setup_fail "dockerd did not start (its log is in $OUT_DIR/$tag.dockerd.log)"
    fi
  fi
}

dk() { "$docker" --host "unix://$sock" "$@"; }

build_image() {
  section "Image $IMAGE (built here, no registry)"
  local r="$tmp/rootfs" d target p
  mkdir -p "$r/usr/bin" "$r/usr/sbin" "$r/usr/lib"
  # The host's merged-/usr links, relative so nothing resolves outside the rootfs.
  for d in bin sbin lib lib64 lib32 libx32; do
    [ -L "/$d" ] || continue
    target=$(readlink "/$d")
    target=${target#/}
    case $target in *..*) continue ;; esac
    mkdir -p "$r/$target" && ln -s "$target" "$r/$d"
  done
  mkdir -p "$r"/{bin,dev,etc,proc,sys,tmp,run,root,var/tmp}
  chmod 1777 "$r/tmp" "$r/var/tmp"
  cp "$B/bin/busybox" "$r/bin/busybox"
  for p in sh ls cat echo sleep; do ln -sf busybox "$r/bin/$p"; done
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$r/etc/passwd"
  printf 'root:x:0:\n' >"$r/etc/group"
  # What nvidia-smi (and the libnvidia-ml it loads) need from glibc, at the host's paths.
  local libs=()
  if [ -n "$nvsmi" ]; then
    mapfile -t libs < <({ ldd_paths "$(readlink -f "$nvsmi")"; [ ${#nvml_files[@]} -gt 0 ] && ldd_paths "$(readlink -f "${nvml_files[0]}")"; } | grep -v 'libnvidia-ml' | sort -u)
  fi
  if [ ${#libs[@]} -eq 0 ]; then
    echo "  $nvsmi is not a dynamic executable: no libraries copied${label:+ (the FAKE nvidia-smi is a busybox sh script)}"
  fi
  for p in "${libs[@]}"; do
    mkdir -p "$r$(dirname "$p")" && cp -L "$p" "$r$p" || setup_fail "cannot copy $p into the image"
    if [ ${#sys_dirs[@]} -gt 0 ] && ! is_sys_dir "$(dirname "$p")" && [[ $p != */ld-linux* ]]; then
      mkdir -p "$r${sys_dirs[0]}" && cp -L "$p" "$r${sys_dirs[0]}/"
    fi
    echo "  + $p"
  done
  echo "  + /bin/busybox (static) and links: sh ls cat echo sleep"
  local out rc
  if [ -n "$docker" ]; then
    out=$(tar -C "$r" --numeric-owner -cf - . | dk import - "$IMAGE" 2>&1)
  else
    out=$(tar -C "$r" --numeric-owner -cf - . | curl -sf --unix-socket "$sock" -X POST \
      -H 'Content-Type: application/x-tar' --data-binary @- \
      "http://docker/images/create?fromSrc=-&repo=${IMAGE%:*}&tag=${IMAGE##*:}" 2>&1)
  fi
  rc=$?
  [ $rc = 0 ] || setup_fail "importing the image failed: $out"
  echo "  imported: $(printf '%s' "$out" | tail -1)"
}

write_scenario() {
  section "Scenario"
  local seed=""
  for seed in "$B/scenarios/seed.toml" "$script_dir/../scenarios/seed.toml"; do [ -f "$seed" ] && break; done
  [ -f "$seed" ] || setup_fail "no seed scenario (bundle/scenarios/seed.toml)"
  mkdir -p "$tmp/scenario"
  # The file stays seed.toml: trial names stay seed::…, the snapshot host/seed.snap.
  scenario="$tmp/scenario/seed.toml"
  awk -v n="${#gpu_index[@]}" '/^\[/ { s = ($0 == "[gpus]") } s && /^count[ \t]*=/ { print "count = " n; next } { print }' \
    "$seed" >"$scenario"
  grep -q "^count = ${#gpu_index[@]}\$" "$scenario" || setup_fail "could not set [gpus] count in $scenario"
  cp "$scenario" "$OUT_DIR/$tag.seed.toml"
  echo "  $seed with [gpus] count = ${#gpu_index[@]} -> $scenario"
  "$harness" list --scenario "$scenario" | indent
  [ "${PIPESTATUS[0]}" = 0 ] || setup_fail "the scenario does not load"
}

# The multi-gpu scenario on a machine with at least 4 GPUs: its count becomes the
# machine's, and its "unknown device" becomes the first index the machine lacks.
write_multi_scenario() {
  local src="$script_dir/../scenarios/multi-gpu.toml" n=${#gpu_index[@]}
  multi_scenario=""
  if [ "$n" -lt 4 ]; then
    echo "  multi-gpu: not run: this machine has $n GPU(s), the scenario needs at least 4"
    return
  fi
  [ -f "$src" ] || { echo "  multi-gpu: not run: $src is missing"; return; }
  multi_scenario="$tmp/scenario/multi-gpu.toml"
  awk -v n="$n" '/^\[/ { s = ($0 == "[gpus]") } s && /^count[ \t]*=/ { print "count = " n; next } { print }' "$src" \
    | sed "s#nvidia.com/gpu=4#nvidia.com/gpu=$n#g" >"$multi_scenario"
  cp "$multi_scenario" "$OUT_DIR/$tag.multi-gpu.toml"
  echo "  $src with [gpus] count = $n (unknown device nvidia.com/gpu=$n) -> $multi_scenario"
}

for_the_record() {
  section "For the record: docker info (CDI lines) and direct docker runs"
  if [ -z "$docker" ]; then
    echo "  no docker CLI in the bundle: skipped"
    return
  fi
  dk info 2>&1 | grep -i -E 'cdi|Discovered Devices|Server Version|Storage Driver|Cgroup (Driver|Version)|Runtimes' | indent
  local c rc out
  for c in "--device nvidia.com/gpu=all" "--gpus all"; do
    echo "  \$ docker run --rm --network none $c $IMAGE nvidia-smi"
    # shellcheck disable=SC2086
    out=$(timeout 60 "$docker" --host "unix://$sock" run --rm --network none $c "$IMAGE" nvidia-smi 2>&1)
    rc=$?
    printf '%s\n' "$out" | indent
    echo "    (exit $rc)"
  done
}

run_harness() { # N [SCENARIO REPORT-TAG]: 1 records the snapshot, 2 must pass
  local n=$1 scenario=${2:-$scenario} rtag=${3:-$tag} ci json junit md cli=() quiet=() rc
  if [ "$n" = 1 ]; then
    # Outside CI mode a first run records `<scenario>.snap.new` (status `new`); it is
    # accepted below, as `cargo insta accept` would, so run #2 compares against it.
    ci=false json="$OUT_DIR/$rtag.run1.json" junit="$OUT_DIR/$rtag.run1.xml"
  else
    # Quiet (the table only): run #1 showed progress already, and the tail of the
    # output is what a caller sees first. CI mode: a missing snapshot fails.
    ci=true json="$OUT_DIR/$rtag.json" junit="$OUT_DIR/$rtag.xml" quiet=(--quiet)
  fi
  md="${json%.json}.md"
  [ -n "$docker" ] && cli=(--docker-cli "$docker")
  local cmd=("$harness" run --backend host --docker-host "unix://$sock" --scenario "$scenario"
    --image "$IMAGE" "${cli[@]}" --snapshots "$tmp/snapshots" --json "$json" --junit "$junit" --markdown "$md" "${quiet[@]}")
  echo "  CI=$ci ${cmd[*]}"
  [ -z "$docker" ] && echo "  (no --docker-cli: the bundle has no docker CLI, so info_cli is skipped)"
  (cd "$tmp" && env CI=$ci COLUMNS=140 "${cmd[@]}")
  rc=$?
  if [ "$n" = 1 ]; then
    local pending
    for pending in "$tmp"/snapshots/host/*.snap.new; do
      [ -e "$pending" ] && mv "$pending" "${pending%.new}"
    done
  fi
  return $rc
}

# ---------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------
echo "gpu-e2e.sh: cdi-harness end to end on this machine's GPUs through CDI ($(date -u +%Y-%m-%dT%H:%M:%SZ), $(hostname 2>/dev/null))"
if [ "$fake" = 1 ]; then
  cat <<EOF

################################################################################
##  FAKE GPU MODE (--fake-gpu, $fake_gpus GPUs): nvidia-smi, libnvidia-ml and
##  /dev/nvidia* are FAKES in a private mount namespace. This exercises the
##  script only; NOTHING here is real NVIDIA hardware or software.
################################################################################
EOF
  fake_setup
fi
echo "temp dir: $tmp   reports: $OUT_DIR"

preflight_host
preflight_bundle
if [ ${#problems[@]} -gt 0 ]; then
  printf '\n%sPREFLIGHT FAILED (exit 2): this machine cannot run the end-to-end check. Missing:\n' "$label"
  for p in "${problems[@]}"; do printf '  - %s\n' "$p"; done
  exit 2
fi
echo
echo "${label}preflight ok: ${#gpu_index[@]} GPU(s), driver ${driver:-?}"

make_path_dir
write_spec
setup_engine
build_image
write_scenario
for_the_record

section "cdi-harness run #1 (records the host snapshot)"
run_harness 1
rc1=$?
echo "  run #1 exit: $rc1"
snap="$tmp/snapshots/host/seed.snap"
if [ -f "$snap" ]; then
  mkdir -p "$OUT_DIR/$tag.snapshots/host"
  cp "$snap" "$OUT_DIR/$tag.snapshots/host/seed.snap"
  echo "  recorded $snap ($(wc -l <"$snap") lines; copied to $OUT_DIR/$tag.snapshots/host/seed.snap)"
else
  echo "  no snapshot was recorded at $snap"
fi

section "cdi-harness run #2 (must pass entirely)"
run_harness 2
rc2=$?

section "multi-gpu scenario"
write_multi_scenario
rcm=skipped
if [ -n "$multi_scenario" ]; then
  run_harness 1 "$multi_scenario" "$tag.multi-gpu" >/dev/null 2>&1
  run_harness 2 "$multi_scenario" "$tag.multi-gpu"
  rcm=$?
  [ "$rcm" -gt "$rc2" ] && rc2=$rcm
fi

case $rc2 in
  0) verdict="PASS: every check passed" final=0 ;;
  1) verdict="FAIL: a check failed (see the table above and $OUT_DIR/$tag.json)" final=1 ;;
  *) verdict="COULD NOT RUN: cdi-harness exited $rc2 (usage or configuration error)" final=2 ;;
esac
section "RESULT"
echo "  run #1 exit $rc1, run #2 exit $rc2, multi-gpu: $rcm"
if [ "$fake" = 1 ]; then
  echo "  ${label}$verdict — on $fake_gpus FAKE GPU(s): this proves the script, not any hardware"
else
  echo "  $verdict — on ${#gpu_index[@]} real GPU(s), driver ${driver:-?}, kernel $(uname -r)"
fi
echo "  reports: $OUT_DIR/$tag.json, $OUT_DIR/$tag.xml, $OUT_DIR/$tag.md, log $OUT_DIR/$tag.log"
exit $final
