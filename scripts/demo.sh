#!/usr/bin/env bash
# make demo: the mock API on 127.0.0.1, the bundled posts pipeline, the table.
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/debug"
out=$(mktemp)
"$bin/ingest-mock" --port 0 --posts 500 --for 300 >"$out" 2>&1 &
mock=$!
trap 'kill "$mock" 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do
    grep -q '^listening on ' "$out" && break
    sleep 0.05
done
url=$(sed -n 's/^listening on //p' "$out")
[ -n "$url" ] || { echo "the mock API did not start:"; cat "$out"; exit 1; }
echo "mock API on $url"
echo "\$ API_BASE=$url ingest run pipelines/posts.toml"
API_BASE="$url" "$bin/ingest" run pipelines/posts.toml --progress never
echo
echo "\$ ingest show pipelines/posts.toml"
"$bin/ingest" show pipelines/posts.toml --limit 5
echo
echo "\$ ingest runs pipelines/posts.toml"
"$bin/ingest" runs pipelines/posts.toml --limit 3
