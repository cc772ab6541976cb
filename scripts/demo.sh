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
echo
echo "Next: run ingest yourself. The binary is $bin/ingest"
echo "(or use \`cargo run --\` in this folder; \`make install\` puts it on your PATH):"
echo "  make mock                                                   # the mock API on 127.0.0.1:8080, in another terminal"
echo "  API_BASE=http://127.0.0.1:8080 $bin/ingest run pipelines/posts.toml pipelines/comments.toml"
echo "  $bin/ingest status pipelines/*.toml                  # each pipeline's last run"
echo "  $bin/ingest validate pipelines/examples/*.toml       # one example per pagination kind"
echo "  $bin/ingest run pipelines/files.toml                   # the JSON files in examples/files/ into data/orders.db"
echo "  $bin/ingest run pipelines/scrape.toml                  # the pages in pipelines/urls.txt (needs make mock)"
echo "  $bin/ingest run pipelines/listing.toml                 # a listing of pages, by their next links (needs make mock)"
echo "  $bin/ingest --help                                   # every command; docs/reference.md for the pipeline file"
