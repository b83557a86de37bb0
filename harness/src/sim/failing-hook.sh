#!/bin/sh
# cdi-harness: a CDI createContainer hook that fails like nvidia-cdi-hook does when the
# spec no longer matches the driver (nixpkgs#411150). Keep the message equal to
# sim::spec::FAILING_HOOK_MESSAGE.
echo 'failed to create link [libcuda.so.1 /usr/lib/x86_64-linux-gnu/libcuda.so]: no such file or directory (simulated by cdi-harness)' >&2
exit 1
