#!/usr/bin/env bash
# ci/demo.sh: the main job on a fresh machine: set everything up, then boot a guest with
# `vmm launch` on a test host (emulated unless the CPU has vmx/svm) and run a command in it.
# Usage: ci/demo.sh [COMMAND...]   (default: uname -r)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ci/setup.sh
cmd=("$@")
((${#cmd[@]} > 0)) || cmd=(uname -r)
printf -v quoted '%q ' "${cmd[@]}"
exec target/release/testhost "vmm launch --vcpus 2 -- $quoted"
