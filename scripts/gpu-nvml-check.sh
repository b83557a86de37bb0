#!/usr/bin/env bash
# Records what NVML reports on a real GPU machine, as fixtures for the `gpu` and `doctor`
# tests: `cdi-harness gpu inventory --json` and `cdi-harness doctor --json` beside
# nvidia-smi's own view (-L, the table, a CSV query) and the device nodes, then checks
# that NVML and nvidia-smi agree on every UUID and that each GPU's minor has its node.
#
# Needs: root, an NVIDIA driver, a prebuilt binary (no network, no Docker needed):
#   cargo build --release -p cdi-harness && mkdir -p .gpu-e2e && cp target/release/cdi-harness .gpu-e2e/
# Run:    bash scripts/gpu-nvml-check.sh        (outputs under $OUT, else a temp dir)
# Exit:   0 NVML and nvidia-smi agree; 1 they disagree or a command failed; 2 prerequisite missing.
# Time:   a few seconds; every command has a timeout, 60 s in all at most.
set -u
BIN=${CDI_HARNESS:-.gpu-e2e/cdi-harness}
OUT=${OUT:-$(mktemp -d /tmp/gpu-nvml.XXXXXX)}
mkdir -p "$OUT"
log() { printf '%s\n' "$*" | tee -a "$OUT/summary.txt"; }

[ -x "$BIN" ] || { log "missing $BIN: cargo build --release -p cdi-harness && cp target/release/cdi-harness .gpu-e2e/"; exit 2; }
command -v nvidia-smi >/dev/null || { log "missing nvidia-smi: no NVIDIA driver here"; exit 2; }

log "gpu-nvml-check: $(date -u +%FT%TZ) kernel $(uname -r), binary $("$BIN" --version 2>&1)"
timeout 15 nvidia-smi -L >"$OUT/nvidia-smi-L.txt" 2>&1
timeout 15 nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
timeout 15 nvidia-smi --query-gpu=index,uuid,name,pci.bus_id,driver_version,mig.mode.current --format=csv >"$OUT/nvidia-smi-query.csv" 2>&1
ls -l /dev/nvidia* >"$OUT/dev-nodes.txt" 2>&1
grep -h . /proc/driver/nvidia/gpus/*/information >"$OUT/proc-driver-gpus.txt" 2>/dev/null
ls -l /run/cdi /etc/cdi >"$OUT/cdi-dirs.txt" 2>&1

# 1. As the loader finds NVML by itself (on NixOS and some VMs it does not: the binary
#    then falls back to known driver directories; both outcomes are worth recording).
timeout 20 "$BIN" gpu inventory --json >"$OUT/inventory.json" 2>"$OUT/inventory.stderr"
rc_inv=$?
log "gpu inventory --json: exit $rc_inv ($(head -c 300 "$OUT/inventory.stderr"))"
timeout 20 "$BIN" gpu inventory >"$OUT/inventory.txt" 2>&1
# 2. With the directory of the real libnvidia-ml on LD_LIBRARY_PATH, for comparison.
lib=$(ls /run/opengl-driver/lib/libnvidia-ml.so.1 /usr/local/nvidia/lib64/libnvidia-ml.so.1 /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1 /usr/lib64/libnvidia-ml.so.1 2>/dev/null | head -n1)
if [ -n "$lib" ]; then
  LD_LIBRARY_PATH=$(dirname "$lib") timeout 20 "$BIN" gpu inventory --json >"$OUT/inventory-ld-path.json" 2>&1
  log "with LD_LIBRARY_PATH=$(dirname "$lib"): exit $?"
fi
timeout 30 "$BIN" doctor --json >"$OUT/doctor.json" 2>"$OUT/doctor.stderr"
log "doctor --json: exit $? (1 expected here: no Docker, no spec)"
timeout 30 "$BIN" doctor >"$OUT/doctor.txt" 2>&1

# Agreement: NVML's UUIDs == nvidia-smi -L's, and /dev/nvidia<minor> exists for each GPU.
fail=0
[ "$rc_inv" = 0 ] || { log "FAIL: gpu inventory exited $rc_inv"; fail=1; }
smi=$(grep -o 'GPU-[0-9a-f-]*' "$OUT/nvidia-smi-L.txt" | sort)
nvml=$(grep -o '"uuid": "GPU-[0-9a-f-]*"' "$OUT/inventory.json" 2>/dev/null | grep -o 'GPU-[0-9a-f-]*' | sort)
if [ -n "$smi" ] && [ "$smi" = "$nvml" ]; then
  log "ok: NVML and nvidia-smi -L list the same $(echo "$smi" | wc -l) GPU UUID(s)"
else
  log "FAIL: UUIDs differ: nvidia-smi [$smi] NVML [$nvml]"; fail=1
fi
for m in $(grep -o '"minor": [0-9]*' "$OUT/inventory.json" 2>/dev/null | grep -o '[0-9]*$'); do
  if [ -c "/dev/nvidia$m" ]; then log "ok: /dev/nvidia$m exists"; else log "FAIL: NVML minor $m has no /dev/nvidia$m"; fail=1; fi
done
log "outputs in $OUT"
exit $fail
