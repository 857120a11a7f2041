# The two set-up commands of the README: `make run` and `make test`.
# Both install what they need (Debian packages with apt-get, Python packages with pip into .venv).

PY      ?= python3
VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
# `make run` boots Debian 12's netboot installer under QEMU: only what that needs.
RUN_PKGS := qemu-system-x86 qemu-utils osinfo-db debian-installer-12-netboot-amd64 \
            gpgv debian-archive-keyring python3-venv util-linux
# --connect: a real libvirtd (started by the tests; -system for its libvirt-qemu user and
# default config, though nothing here runs systemd), virt-install to compare with,
# an sshd for qemu+ssh://, and what building libvirt-python (the `libvirt` extra) needs.
LIBVIRT_PKGS := libvirt-daemon libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients libxml2-utils \
            dnsmasq-base iproute2 virtinst openssh-server openssh-client netcat-openbsd \
            libvirt-dev pkg-config gcc python3-dev
# `make test` also needs the other architectures, firmware, ISO and cpio tools, the peers the
# benchmarks and tests compare against, and the daemons the tests start themselves.
TEST_PKGS := $(RUN_PKGS) qemu-system-arm qemu-efi-aarch64 ovmf ipxe-qemu \
            debian-installer-12-netboot-arm64 \
            qemu-system-ppc qemu-system-mips qemu-efi-arm dosfstools mtools \
            debian-installer-12-netboot-i386 debian-installer-12-netboot-armhf \
            debian-installer-12-netboot-ppc64el debian-installer-12-netboot-mips64el \
            xorriso genisoimage cpio gpg curl linux-doc busybox-static openssl debconf \
            dnsmasq-base ipxe iproute2 openssh-server openssh-client $(LIBVIRT_PKGS)

.PHONY: run test run-deps test-deps venv test-venv lint clean

# apt-get only what is missing (as root, or through sudo).
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

run-deps:
	$(call apt_install,$(RUN_PKGS))

test-deps:
	$(call apt_install,$(TEST_PKGS))

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(PYTHON) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

test-venv: $(VENV)/.installed-test

run: run-deps venv
	$(PYTHON) scripts/main_job.py

test: test-deps test-venv
	$(PYTHON) -m pytest -v -p no:cacheprovider $(PYTEST_ARGS)

lint: test-venv
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build src/*.egg-info
