# ingest: the two commands a new machine needs are `make demo` and `make test`.
CARGO ?= cargo

.PHONY: all build test demo lint fmt mock clean

all: build

build:
	$(CARGO) build --workspace --bins

## Runs every test: unit tests beside the code, end-to-end tests against the
## mock API on 127.0.0.1 with the real binary and real SQLite files.
test:
	$(CARGO) test --workspace

## Starts the mock API on 127.0.0.1, runs `ingest run pipelines/posts.toml`
## against it, shows the table in data/posts.db, stops the mock API.
demo: build
	./scripts/demo.sh

## The mock API on 127.0.0.1:8080 (Ctrl-C stops it), for trying pipelines by hand.
mock:
	$(CARGO) run -p ingest-mock -- --port 8080 --posts 1000

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
	rm -f data/*.db data/*.db-wal data/*.db-shm
