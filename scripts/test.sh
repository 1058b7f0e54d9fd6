#!/usr/bin/env bash
# The test command: system set-up, then every test (unit, integration, property, benches
# compiled and run once in test mode), in the debug profile only so RocksDB's C++ is built once.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo fmt --check
cargo test --locked --all-targets --features fault-injection
