# The two set-up commands of the README: `make run` and `make test`.
# Both install what they need (Debian packages with apt-get, Python packages with pip into .venv).

PY      ?= python3
VENV    ?= .venv
PYTHON  := $(VENV)/bin/python
APT_PKGS := qemu-system-x86 qemu-system-arm qemu-utils ovmf qemu-efi-aarch64 ipxe-qemu \
            osinfo-db debian-installer-12-netboot-amd64 debian-installer-12-netboot-arm64 \
            xorriso genisoimage cpio gpg gpgv debian-archive-keyring curl linux-doc \
            libvirt-daemon-system virtinst python3-venv \
            busybox-static

.PHONY: run test deps venv lint clean

deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: deps venv
	$(PYTHON) scripts/main_job.py

test: deps venv
	$(PYTHON) -m pytest -v -p no:cacheprovider $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build src/*.egg-info
