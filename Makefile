# mailrep — top-level entry points. CMake does the building underneath.
#   make          build build/mailrep
#   make test     install missing packages, build (plain and ASan/UBSan), run every test
#   make demo     install missing packages, build, run the DNSBL and relay demo on loopback
#   make bench    every benchmark against its real peer (not part of make test)
#   make fuzz     run every libFuzzer target for FUZZ_SECONDS each

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 20
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
PYTHON     ?= /usr/bin/python3

.PHONY: all build asan fuzz-build deps test unit system fuzz demo bench clean format

all: build

deps:
	@./scripts/deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMAILREP_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j$(JOBS)

fuzz-build: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMAILREP_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j$(JOBS)

unit: build asan
	ctest --test-dir $(BUILD) --output-on-failure
	ctest --test-dir $(ASAN_BUILD) --output-on-failure

system: build asan
	MAILREP_BIN=$(CURDIR)/$(ASAN_BUILD)/mailrep $(PYTHON) -m pytest -q -p no:cacheprovider tests/system

fuzz: fuzz-build
	@./tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

test: unit system fuzz

demo: build
	@./demo/demo.sh $(BUILD)/mailrep

# Every benchmark, each against its peer in the same run (docs/PERFORMANCE.md).
bench: build
	@echo "== DNS server: mailrep dnsbl vs rbldnsd vs floor"; ./bench/run.sh
	@echo "== live zones"; $(PYTHON) bench/live_bench.py
	@echo "== listing store"; $(PYTHON) bench/listing_bench.py
	@echo "== DKIM signing"; ./bench/dkim_bench.sh 3
	@echo "== checker: 40 DNSBLs behind a 200 ms delay"; $(PYTHON) bench/check_bench.py
	@echo "== relay: mailrep relay vs Postfix"; $(PYTHON) bench/relay_bench.py --bin $(BUILD)/mailrep -n 20000 --runs 3
	@echo "== relay: the same, injecting over persistent connections"; $(PYTHON) bench/relay_bench.py --bin $(BUILD)/mailrep -n 20000 --runs 3 --reuse --no-memory
	@echo "== relay: a large deferred queue"; $(PYTHON) bench/relay_queue_bench.py --bin $(BUILD)/mailrep -n 100000
	@echo "== relay: mail to 5,000 sites against mail to one"; $(PYTHON) bench/relay_sites_bench.py --bin $(BUILD)/mailrep

format:
	clang-format -i src/*/*.c src/*/*.h tests/unit/*.c tests/fuzz/*.c

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD) bench/out
