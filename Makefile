# hvsnap — see README.md. `make demo` and `make test` are the two set-up commands.
GO      ?= go
BIN     ?= bin/hvsnap
PKGS    ?= ./...
FUZZTIME ?= 30s

.PHONY: all build test test-deps demo bench fuzz cross vet clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/hvsnap

# Installs the test oracles when missing (root only), then vet, tests, Windows build.
test: test-deps
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) test -count=1 -timeout 20m $(PKGS)
	GOOS=windows $(GO) build $(PKGS)

test-deps:
	@scripts/test-deps.sh

demo: build
	@scripts/demo.sh $(BIN)

bench: build test-deps
	@scripts/bench.sh $(BIN)

# -fuzzminimizetime keeps Go from spending the whole run minimizing the
# multi-KB seed images.
fuzz:
	$(GO) test ./vhd -run '^$$' -fuzz '^FuzzVHDOpen$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x
	$(GO) test ./vhd -run '^$$' -fuzz '^FuzzVHDXOpen$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x
	$(GO) test ./vm -run '^$$' -fuzz '^FuzzVMCX$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x
	$(GO) test ./vm -run '^$$' -fuzz '^FuzzVMCXReplay$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 200x

cross:
	GOOS=windows GOARCH=amd64 $(GO) build -o bin/hvsnap.exe ./cmd/hvsnap
	GOOS=linux GOARCH=arm64 $(GO) build -o bin/hvsnap-linux-arm64 ./cmd/hvsnap

clean:
	rm -rf bin
