# ingest: the two commands a new machine needs are `make demo` and `make test`.
CARGO ?= cargo

.PHONY: all build test demo bench lint fmt mock clean install

all: build

build:
	$(CARGO) build --workspace --bins

## Runs every test: unit tests beside the code, end-to-end tests against the
## mock API on 127.0.0.1 with the real binary, real SQLite files and a
## throwaway PostgreSQL cluster (scripts/with-postgres.sh: needs Debian's
## `postgresql` package, and says so when it is missing).
test:
	./scripts/with-postgres.sh $(CARGO) test --no-fail-fast --workspace --lib --bins --tests

## Starts the mock API on 127.0.0.1, runs `ingest run pipelines/posts.toml`
## against it, shows the table in data/posts.db, stops the mock API.
demo: build
	./scripts/demo.sh

## Release build; the mock API and ingest on 127.0.0.1: records/s and peak RSS
## of ingest beside the fetch-only and write-only floors measured in the same
## run; concurrency "auto"; a 1 GB NDJSON file through the files source
## (BENCH_NDJSON_MB); then PostgreSQL (a throwaway cluster): the sink beside a
## COPY-only floor, and a shared backfill by 1 and 3 processes.
## BENCH_RECORDS=100000 BENCH_PG_RECORDS=100000 for a quicker run;
## BENCH_ONLY=main,auto,ndjson,pg picks parts.
bench:
	$(CARGO) build --release --workspace --bins
	PG_FSYNC=on ./scripts/with-postgres.sh $(CARGO) bench -p ingest --bench throughput

## The mock API on 127.0.0.1:8080 (Ctrl-C stops it), for trying pipelines by hand.
mock:
	$(CARGO) run -p ingest-mock -- --port 8080 --posts 1000

## Installs `ingest` into ~/.cargo/bin, its man page and bash completions.
install:
	$(CARGO) install --path . --locked
	mkdir -p $(HOME)/.local/share/man/man1 $(HOME)/.local/share/bash-completion/completions
	$(HOME)/.cargo/bin/ingest man > $(HOME)/.local/share/man/man1/ingest.1
	$(HOME)/.cargo/bin/ingest completions bash > $(HOME)/.local/share/bash-completion/completions/ingest

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -f data/*.db data/*.db-wal data/*.db-shm
