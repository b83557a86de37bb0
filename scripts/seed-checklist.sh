#!/usr/bin/env bash
# The seed write-up's manual checklist, as a user would type it: the baseline the
# harness's benchmark (`cdi-harness bench`) is timed against. It uses the engine in
# DOCKER_HOST, the spec directory in SPEC_DIR and the image in IMAGE.
set -u
spec_dir=${SPEC_DIR:-/run/cdi}
image=${IMAGE:-nvidia/cuda:13.1.1-base-ubuntu24.04}
status=0

# Verify CDI spec exists
ls -la "$spec_dir" | grep -q nvidia-container-toolkit.json || { echo "spec missing"; status=1; }
# Verify Docker sees CDI devices
docker info 2>&1 | grep -i cdi | grep -q 'cdi: nvidia.com/gpu=all' || { echo "no CDI devices"; status=1; }
# The correct way: CDI device flag
docker run --rm --device nvidia.com/gpu=all "$image" nvidia-smi >/dev/null || { echo "--device failed"; status=1; }
# The wrong way: --gpus must fail with the legacy-driver error
out=$(docker run --rm --gpus all "$image" nvidia-smi 2>&1)
case "$out" in
  *'could not select device driver "" with capabilities: [[gpu]]'*) ;;
  *) echo "--gpus did not fail as expected: $out"; status=1 ;;
esac
exit $status
