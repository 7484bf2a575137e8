# mpiweb: `make run` starts the 3-rank cluster on www/, `make test` runs
# every test, `make bench` compares against nginx. Each installs the Debian
# packages it needs when they are missing (run as root).

SHELL := /bin/bash
NP ?= 3
LISTEN ?= 0.0.0.0:8080
BIN := target/release/mpiweb
# The Open MPI build (`make run-openmpi`, tests/openmpi.rs).
OMPI_BIN := target/openmpi/release/mpiweb

BUILD_PKGS := mpich libmpich-dev libclang-dev clang pkg-config
TEST_PKGS := $(BUILD_PKGS) curl chromium iproute2
BENCH_PKGS := $(BUILD_PKGS) curl nginx-light wrk linux-perf

.PHONY: run run-openmpi build build-openmpi test lint bench deps-build deps-test deps-bench fuzz

# -disable-auto-cleanup: a worker that dies (its keeper exits non-zero)
# does not take the other ranks with it.
run: build
	mpirun -disable-auto-cleanup -np $(NP) ./$(BIN) --listen $(LISTEN) www/

# Open MPI instead of MPICH: its own build (a binary runs only under the
# launcher of the MPI it links), --oversubscribe for 3 ranks on 2 cores.
# Its launcher turns SIGTERM and Ctrl-C into SIGKILL of every rank 2 s
# later, but passes SIGUSR2 on: mpirun runs in its own session, and Ctrl-C
# or SIGTERM here becomes SIGUSR2, mpiweb's graceful stop. --enable-recovery:
# a worker that dies does not end the job.
run-openmpi: build-openmpi
	OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
	  setsid mpirun.openmpi --oversubscribe --enable-recovery -np $(NP) $(OMPI_BIN) --listen $(LISTEN) www/ & mpirun=$$!; \
	trap 'kill -USR2 $$mpirun; again=1' INT TERM; \
	while again=; wait $$mpirun; rc=$$?; [ -n "$$again" ]; do :; done; exit $$rc

build-openmpi: deps-build
	@dpkg -s openmpi-bin libopenmpi-dev >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y openmpi-bin libopenmpi-dev; $(PIN_MPICH); }
	MPICC=mpicc.openmpi cargo build --release --target-dir target/openmpi

# Installing Open MPI makes it Debian's default mpirun and mpicc: MPICH
# stays the default here.
PIN_MPICH := update-alternatives --set mpirun /usr/bin/mpirun.mpich; \
	update-alternatives --set mpi /usr/bin/mpicc.mpich; \
	update-alternatives --set mpi-$$(gcc -print-multiarch) /usr/include/$$(gcc -print-multiarch)/mpich

build: deps-build
	cargo build --release

# The Open MPI build too: tests/openmpi.rs runs it under Open MPI's mpirun.
test: deps-test build-openmpi
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

# Coverage-guided fuzzing (needs cargo-fuzz; see README). New inputs go to
# corpus/TARGET (ignored by git); the committed seeds/TARGET are only read.
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && mkdir -p corpus/parse_head && RUSTC_BOOTSTRAP=1 cargo fuzz run parse_head corpus/parse_head seeds/parse_head -- -dict=dicts/parse_head.dict -max_total_time=60
	cd fuzz && mkdir -p corpus/map_path && RUSTC_BOOTSTRAP=1 cargo fuzz run map_path corpus/map_path seeds/map_path -- -dict=dicts/map_path.dict -max_total_time=60
