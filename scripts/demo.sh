#!/usr/bin/env bash
# The main job: system set-up, build (release), then the demo (switch + simulators + seeded
# data). Arguments go to `cyberswitch demo`, e.g. --data-dir /tmp/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --locked --release --bin cyberswitch
exec "${CARGO_TARGET_DIR:-target}/release/cyberswitch" demo "$@"
