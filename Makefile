# splitdbg: `make demo` and `make test` set up everything on a fresh Debian 12 machine.
# Each step is idempotent and quiet when there is nothing to do; the kernel build is cached
# under ~/.cache/splitdbg keyed by its inputs (kernel/build-kernel.sh).

PYTHON   ?= python3
VENV     := .venv
PY       := $(VENV)/bin/python
PORT     ?= 1234
SMP      ?= 2
BUILD    := build
STAGING  := $(BUILD)/guest-root

APT_PACKAGES := qemu-system-x86 qemu-utils gdb busybox-static linux-source-6.1 build-essential \
                flex bison libelf-dev libssl-dev bc cpio kmod xz-utils python3-venv tmux \
                bochs bochsbios vgabios isolinux syslinux-common xorriso

# Directories with guest-side code (modules, tools, probes); each Makefile takes KDIR and DESTDIR
# and installs into the staging tree that becomes the initramfs.
# The demo loads the split-kernel module once it exists.
comma := ,
DEMO_LOAD := $(if $(wildcard kernel/module/Makefile),--load splitkernel$(comma)sktest,)
GUEST_DIRS := $(patsubst %/Makefile,%,$(wildcard kernel/module/Makefile kernel/tools/Makefile kernel/probes/*/Makefile))

.PHONY: all deps venv kernel guest test test-unit demo bench clean help
all: guest venv

help:
	@echo "make demo    install what is missing, build the guest, boot it, attach"
	@echo "make test    install what is missing, build, run unit and integration tests"
	@echo "make bench   benchmarks (bench/)"

deps:
	@scripts/ensure-apt.sh $(APT_PACKAGES)

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml | deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v "^WARNING: Location" || true
	@$(PY) -c "import splitdbg, pygdbmi, textual, networkx, elftools, capstone, pytest"
	@touch $@

kernel: deps
	@kernel/build-kernel.sh > /dev/null

# The guest: cached kernel + our modules and tools + initramfs, described in build/guest.json.
guest: kernel
	@set -e; kdir=$$(kernel/build-kernel.sh)/build; rm -rf $(STAGING); mkdir -p $(STAGING); \
	for d in $(GUEST_DIRS); do \
	  $(MAKE) -s --no-print-directory -C $$d KDIR=$$kdir DESTDIR=$(CURDIR)/$(STAGING) install; \
	done; \
	kernel/build-initramfs.sh $(STAGING) $(BUILD)/initramfs.cpio.gz; \
	kout=$$(dirname $$kdir); \
	printf '{"bzImage":"%s","vmlinux":"%s","kernel_build":"%s","initrd":"%s"}\n' \
	  $$kout/bzImage $$kout/vmlinux $$kdir $(CURDIR)/$(BUILD)/initramfs.cpio.gz > $(BUILD)/guest.json

test-unit: venv
	$(PY) -m pytest -q tests/unit

test: deps venv guest
	$(PY) -m pytest -q tests

# The demo: a guest with the module loaded, a scenario loop running in it, and the TUI attached.
demo: deps venv guest
	@$(PY) -m splitdbg lab down --port $(PORT) --quiet || true
	$(PY) -m splitdbg lab up --port $(PORT) --smp $(SMP) $(DEMO_LOAD) --run "split-demo"
	$(PY) -m splitdbg attach :$(PORT)

bench: deps venv guest
	$(PY) bench/run_all.py

clean:
	rm -rf $(BUILD) $(VENV) *.egg-info
