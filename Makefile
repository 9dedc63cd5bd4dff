# Outpost: the one build. Non-recursive; one source list per module folder.
#
#   make                 build outpostd and outpostctl
#   make test            unit tests, fuzz corpus replay, end-to-end tests (installs missing deps)
#   make unit | e2e      one part of the suite
#   make run             local origin + shield + 2 edges on loopback (installs missing deps)
#   make fuzz            libFuzzer binaries (clang) under build/fuzz/
#   make bench           side-by-side benchmarks (bench/README.md)
#   make lint | format | format-check
#
# Knobs: SAN=address,undefined (sanitizers; builds into build-san/), CC=clang, V=1, DEPS=0
# (skip the dependency check), E2E_ARGS='-k name' (select end-to-end tests).

CC ?= cc
SAN ?=
DEPS ?= 1
BUILD ?= build$(if $(SAN),-san,)
PYTHON := /usr/bin/python3

BORINGSSL_CFLAGS := -I/usr/include/android
BORINGSSL_LIBS := -L/usr/lib/x86_64-linux-gnu/android -l:libssl.so.0 -l:libcrypto.so.0 \
	-Wl,-rpath,/usr/lib/x86_64-linux-gnu/android
PKGS := libevent_core libevent_pthreads lmdb libnghttp2 gnutls libngtcp2 libngtcp2_crypto_gnutls libnghttp3

PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wno-unused-parameter -Werror
OPT ?= -O2
CFLAGS_ALL = -std=gnu11 -D_GNU_SOURCE -g $(OPT) -pthread -I. $(WARN) $(PKG_CFLAGS) $(BORINGSSL_CFLAGS) \
	-fno-strict-aliasing $(if $(SAN),-fsanitize=$(SAN) -fno-omit-frame-pointer,) $(CFLAGS)
LDFLAGS_ALL = -pthread $(if $(SAN),-fsanitize=$(SAN),) $(LDFLAGS)
LIBS_ALL = $(PKG_LIBS) $(BORINGSSL_LIBS) -lm

# Per-module sources, in dependency order: lib <- http <- cache <- conf <- tls <- balance <- edge.
LIB_SRC := $(wildcard lib/*.c)
HTTP_SRC := $(wildcard http/*.c)
CACHE_SRC := $(wildcard cache/*.c)
CONF_SRC := $(wildcard conf/*.c)
TLS_SRC := $(wildcard tls/*.c)
BALANCE_SRC := $(wildcard balance/*.c)
EDGE_SRC := $(wildcard edge/*.c edge/h1/*.c edge/h2/*.c edge/h3/*.c)
CORE_SRC := $(LIB_SRC) $(HTTP_SRC) $(CACHE_SRC) $(CONF_SRC) $(TLS_SRC) $(BALANCE_SRC) $(EDGE_SRC)
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)

UNIT_SRC := $(wildcard tests/unit/*/*.c)
UNIT_BIN := $(UNIT_SRC:%.c=$(BUILD)/%)
FUZZ_SRC := $(filter-out tests/fuzz/replay_main.c,$(wildcard tests/fuzz/*.c))
FUZZ_REPLAY := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/fuzz-replay/%)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build/fuzz/%)

ifeq ($(V),1)
Q :=
else
Q := @
endif

.PHONY: all test unit e2e fuzz fuzz-replay run bench bench-smoke lint format format-check clean deps deps-test

all: $(BUILD)/outpostd $(BUILD)/outpostctl outpostd outpostctl

outpostd outpostctl: %: $(BUILD)/%
	$(Q)ln -sf $(BUILD)/$@ $@

$(BUILD)/liboutpost.a: $(CORE_OBJ)
	$(Q)rm -f $@
	$(Q)ar rcs $@ $^

$(BUILD)/outpostd: $(BUILD)/src/outpostd.o $(BUILD)/liboutpost.a
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_ALL)

$(BUILD)/outpostctl: $(BUILD)/src/outpostctl.o $(BUILD)/liboutpost.a
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(LIBS_ALL)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS_ALL) -MMD -MP -c -o $@ $<

# Unit tests: tests/unit/<module>/<file>.c tests <module>/<file>.c; each is a TAP program.
$(BUILD)/tests/unit/%: tests/unit/%.c $(BUILD)/liboutpost.a tests/unit/tap.h
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(CFLAGS_ALL) -Wno-unused-function -o $@ $< $(BUILD)/liboutpost.a $(LDFLAGS_ALL) $(LIBS_ALL)

# Fuzz corpus replay with the normal compiler: every committed input runs once.
$(BUILD)/fuzz-replay/%: tests/fuzz/%.c tests/fuzz/replay_main.c $(BUILD)/liboutpost.a
	@mkdir -p $(dir $@)
	@echo "  CC      $< (replay)"
	$(Q)$(CC) $(CFLAGS_ALL) -o $@ $< tests/fuzz/replay_main.c $(BUILD)/liboutpost.a $(LDFLAGS_ALL) $(LIBS_ALL)

# Real libFuzzer binaries (clang only).
build/fuzz/%: tests/fuzz/%.c $(CORE_SRC)
	@mkdir -p $(dir $@)
	clang -std=gnu11 -g -O1 -I. $(PKG_CFLAGS) $(BORINGSSL_CFLAGS) -fsanitize=fuzzer,address,undefined \
		-o $@ $< $(CORE_SRC) $(LIBS_ALL) -pthread

deps:
	$(Q)if [ "$(DEPS)" = 1 ]; then ./scripts/deps.sh build; fi

deps-run:
	$(Q)if [ "$(DEPS)" = 1 ]; then ./scripts/deps.sh run; fi

deps-test:
	$(Q)if [ "$(DEPS)" = 1 ]; then ./scripts/deps.sh test; fi

unit: $(UNIT_BIN)
	$(Q)./tests/unit/run.sh $(UNIT_BIN)

fuzz-replay: $(FUZZ_REPLAY)
	$(Q)for f in $(FUZZ_REPLAY); do n=$$(basename $$f); \
		$$f tests/fuzz/corpus/$$n || exit 1; done

fuzz: $(FUZZ_BIN)

# A test that fails is run once more; if it passes then, it is reported as FLAKY (a race to
# investigate, named in the output) and the suite passes. A test that fails twice fails.
E2E_ENV = OUTPOST_BUILD=$(BUILD) $(if $(SAN),ASAN_OPTIONS=quarantine_size_mb=4:detect_leaks=0,)
e2e: all
	$(Q)$(E2E_ENV) $(PYTHON) -m pytest -q -p cacheprovider tests/e2e $(E2E_ARGS) || \
	{ echo "e2e: re-running the failed tests once; any that pass now are FLAKY:"; \
	  $(E2E_ENV) $(PYTHON) -m pytest -q -rA -p cacheprovider --lf tests/e2e $(E2E_ARGS) && \
	  echo "e2e: FLAKY tests above passed on the second run: investigate them"; }

# tests/tools/h3curl: the e2e suite's HTTP/3 client (Debian's curl has none), in Go on
# Debian's quic-go: GOPATH mode, no module download. Without Go it is skipped with a note, and
# the tests over HTTP/3 skip.
H3CURL := $(BUILD)/tools/h3curl
all: $(H3CURL)
$(H3CURL): $(wildcard tests/tools/h3curl/*.go)
	$(Q)if command -v go >/dev/null 2>&1; then echo "  GO      $@"; mkdir -p $(dir $@) && \
		GO111MODULE=off GOPATH=/usr/share/gocode GOFLAGS= GOENV=off CGO_ENABLED=0 \
		GOCACHE=$(abspath $(BUILD))/tools/go-cache go build -o $@ ./tests/tools/h3curl; \
	else echo "  GO      $@ skipped: no go (scripts/deps.sh test); HTTP/3 tests will skip"; fi

test: deps-test
	$(Q)$(MAKE) --no-print-directory all
	$(Q)$(MAKE) --no-print-directory unit
	$(Q)$(MAKE) --no-print-directory fuzz-replay
	$(Q)$(MAKE) --no-print-directory e2e

run: deps-run
	$(Q)$(MAKE) --no-print-directory all
	$(Q)./scripts/run-local.sh

bench: all h3load
	$(Q)./bench/run

# bench/h3load: the HTTP/3 load generator (bench/README.md); `make h3load`. GnuTLS, ngtcp2 and
# nghttp3 only: it must link neither BoringSSL nor OpenSSL. lib/util.o brings xmalloc (and lmdb).
H3LOAD_PKGS := gnutls libngtcp2 libngtcp2_crypto_gnutls libnghttp3 libevent_core lmdb
H3LOAD_OBJ := $(patsubst %.c,$(BUILD)/bench/h3load-obj/%.o,$(notdir $(wildcard bench/h3load/*.c)))
H3LOAD_CFLAGS = -std=gnu11 -D_GNU_SOURCE -g $(OPT) -pthread -I. $(WARN) \
	$(shell pkg-config --cflags $(H3LOAD_PKGS)) \
	$(if $(SAN),-fsanitize=$(SAN) -fno-omit-frame-pointer,) $(CFLAGS)
.PHONY: h3load
h3load: $(BUILD)/bench/h3load
$(BUILD)/bench/h3load-obj/%.o: bench/h3load/%.c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	$(Q)$(CC) $(H3LOAD_CFLAGS) -MMD -MP -c -o $@ $<
$(BUILD)/bench/h3load: $(H3LOAD_OBJ) $(BUILD)/lib/util.o
	@echo "  LD      $@"
	$(Q)$(CC) $(LDFLAGS_ALL) -o $@ $^ $(shell pkg-config --libs $(H3LOAD_PKGS)) -lm
-include $(H3LOAD_OBJ:.o=.d)

lint:
	$(Q)./scripts/lint.sh

format:
	$(Q)clang-format -i $$(git ls-files '*.c' '*.h')

format-check:
	$(Q)clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build build-san outpostd outpostctl

-include $(CORE_OBJ:.o=.d) $(BUILD)/src/outpostd.d $(BUILD)/src/outpostctl.d
