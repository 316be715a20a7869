# Build glue. The two commands the README opens with:
#   make demo   - install what is missing, build, start a server, capture a sample disk, export it
#   make test   - install what is missing, build, lint, make fixtures, run every test
# CI (.ci/run) runs `make test`.

MUSL_TARGET := x86_64-unknown-linux-musl
FIXTURES    := target/fixtures
CARGO       ?= cargo

.PHONY: all setup build agent-static fixtures lint test demo bench clean-fixtures image

all: build

setup:
	bash scripts/setup-host.sh

# Host builds of everything, plus the agent, the init and the converter as static musl binaries
# (what the live image ships and what the end-to-end tests run).
build: setup
	$(CARGO) build --release --workspace --bins
	$(CARGO) build --release -p p2v-capture -p p2v-init -p p2v-convert --target $(MUSL_TARGET)

# The live image (vmlinuz, initrd.img, boot.ipxe, p2v-usb.img) into target/p2v-image.
# Kernel arguments for the stick: make image CMDLINE="p2v.server=https://... p2v.fingerprint=... p2v.token=..."
image: build
	target/release/p2v-image build --output target/p2v-image --cmdline "$(CMDLINE)"

fixtures: setup
	bash scripts/make-fixtures.sh $(FIXTURES)
	bash scripts/make-fs-fixtures.sh target/fs-fixtures
	bash scripts/make-guest-fixture.sh target/guest-fixtures
	bash scripts/make-dracut-guest-fixture.sh target/guest-fixtures

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

test: build fixtures lint
	bash scripts/check-static.sh target/$(MUSL_TARGET)/release/p2v-capture
	bash scripts/check-static.sh target/$(MUSL_TARGET)/release/p2v-convert
	bash scripts/run-tests.sh

demo: build fixtures
	bash scripts/demo.sh

bench: build
	bash scripts/bench.sh

clean-fixtures:
	rm -rf $(FIXTURES)
