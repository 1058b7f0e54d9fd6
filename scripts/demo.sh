#!/usr/bin/env bash
# The main job: system set-up, build (release), then the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --locked --release --bin cyberswitch
bin=target/release/cyberswitch
if "$bin" demo --help >/dev/null 2>&1; then
  exec "$bin" demo "$@"
fi
# Until the switch demo exists: the codec, end to end, under every shipped layout.
for spec in iso87-ascii iso87-binary iso87-bcd iso93-ascii; do
  "$bin" spec check "$spec" | head -2
done
mti=0100; de12=120001; de22=051; de25=00
for spec in iso87-ascii iso87-binary iso87-bcd iso93-ascii; do
  if [ "$spec" = iso93-ascii ]; then mti=1100; de12=261121120001; de22=A10101654140; de25=1510; fi
  json='{"mti":"'$mti'","2":"9410000000000013","3":"310000","4":"000000000000","7":"1121120001","11":"000002","12":"'$de12'","13":"1121","14":"2812","22":"'$de22'","25":"'$de25'","35":"9410000000000013=2812101","37":"532512000002","41":"TERM0001","42":"MERCHANT0000001","49":"410","102":"E-1001"}'
  hex=$("$bin" encode --spec "$spec" --framing binary2 --json "$json")
  echo
  echo "== $spec: balance inquiry, framed with a 2-byte length =="
  echo "$hex"
  "$bin" decode --spec "$spec" --framing binary2 --hex "$hex"
done
