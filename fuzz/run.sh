#!/usr/bin/env bash
# Fuzzes every target for a bounded time each:
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default 10 s, every target)
# Needs the nightly toolchain and cargo-fuzz (installed here when missing).
# First replays the kept regression inputs (fuzz/regressions/<target>), then
# fuzzes from fuzz/seeds/<target> plus the growing local corpus. A crash stops
# the run with the input saved under fuzz/artifacts/<target>/: fix the code,
# then copy the input to fuzz/regressions/<target>/ so it is replayed forever.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-10}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(json_bodies oauth_form access_token client_ip durations config_toml passkey_credential)
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi
# Under CARGO_TARGET_DIR when one is set (CI keeps one outside the clone).
opts=(-O --codegen-units 16)
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  opts+=(--target-dir "$CARGO_TARGET_DIR/fuzz")
fi
fuzz() { env -u CARGO_TARGET_DIR cargo +nightly fuzz "$@"; }
fuzz build "${opts[@]}"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t" "regressions/$t"
  if compgen -G "regressions/$t/*" >/dev/null; then
    echo "== $t: replaying $(ls "regressions/$t" | wc -l) regression inputs"
    fuzz run "${opts[@]}" "$t" regressions/"$t"/* -- -runs=1 2>&1 | tail -n 2
  fi
  echo "== $t: fuzzing for ${seconds}s"
  status=0
  fuzz run "${opts[@]}" "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"artifacts/$t.log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' "artifacts/$t.log" || true
  if [ "$status" -ne 0 ] || compgen -G "artifacts/$t/*" >/dev/null; then
    tail -n 40 "artifacts/$t.log" >&2
    echo "!! $t failed (exit $status); inputs in fuzz/artifacts/$t" >&2
    exit 1
  fi
done
echo "fuzz: every target ran ${seconds}s without a crash"
