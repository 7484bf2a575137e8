# mpiweb: `make run` starts the 3-rank cluster on www/, `make test` runs
# every test, `make bench` compares against nginx. Each installs the Debian
# packages it needs when they are missing (run as root).

SHELL := /bin/bash
NP ?= 3
LISTEN ?= 0.0.0.0:8080
BIN := target/release/mpiweb

BUILD_PKGS := mpich libmpich-dev libclang-dev clang pkg-config
TEST_PKGS := $(BUILD_PKGS) curl chromium
BENCH_PKGS := $(BUILD_PKGS) curl nginx-light wrk

.PHONY: run run-openmpi build test lint bench deps-build deps-test deps-bench fuzz

run: build
	mpirun -np $(NP) ./$(BIN) --listen $(LISTEN) www/

# Open MPI instead of MPICH: its own build (a binary runs only under the
# launcher of the MPI it links), --oversubscribe for 3 ranks on 2 cores.
run-openmpi:
	@dpkg -s openmpi-bin libopenmpi-dev >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y openmpi-bin libopenmpi-dev; }
	MPICC=mpicc.openmpi cargo build --release --target-dir target/openmpi
	OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
	  mpirun.openmpi --oversubscribe -np $(NP) target/openmpi/release/mpiweb --listen $(LISTEN) www/

build: deps-build
	cargo build --release

test: deps-test
	cargo build --release
	cargo test --release

lint: deps-build
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

bench: deps-bench
	cargo build --release
	ulimit -n 20000 2>/dev/null || ulimit -n $$(ulimit -Hn); cargo bench --bench compare

# Install only what is missing: apt-get update, then apt-get install -y.
deps-build deps-test deps-bench: deps-%:
	@need=""; \
	for p in $($(shell echo $* | tr a-z A-Z)_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || need="$$need $$p"; \
	done; \
	if [ -n "$$need" ]; then \
	  echo "installing:$$need"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$need; \
	fi

# Coverage-guided fuzzing (needs cargo-fuzz; see README).
fuzz:
	cargo install cargo-fuzz --locked
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run parse_head -- -max_total_time=60
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run map_path -- -max_total_time=60
