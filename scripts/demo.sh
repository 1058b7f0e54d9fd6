#!/usr/bin/env bash
# The main job: system set-up, build, then the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec cargo run --locked --release --bin cyberswitch -- demo "$@"
