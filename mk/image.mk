# fairpool's image, built from the Containerfile with Debian's buildah (no container
# engine: chroot isolation and the vfs storage driver work inside an unprivileged
# sandbox). Images live in buildah's own storage under $(CACHE)/image.
#
#   make image                        # FROM docker.io/library/python:3.11-slim
#   make image IMAGE_BASE=$(IMAGE_TEST_BASE)   # FROM the local Debian base (no registry)
#
# The tests can pull no registry image, so `image-test-base` builds a base from Debian's
# packages (debootstrap minbase + python3 and its venv module) once and keeps it. It
# trusts what this machine trusts (its local CA certificates), so pip inside the build
# reaches the package index through the same network as the host's pip.
IMAGE_SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
IMAGE ?= localhost/fairpool:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_BASE ?= docker.io/library/python:3.11-slim
# Optional dependency groups in the image: the PostgreSQL ledger driver when defined.
IMAGE_EXTRAS ?= $(shell grep -q '^postgres *=' pyproject.toml && echo postgres)
IMAGE_TEST_BASE := localhost/fairpool-test-base:bookworm
IMAGE_STORE := $(CACHE)/image
DEBIAN_MIRROR ?= http://deb.debian.org/debian
BUILDAH := $(IMAGE_SUDO) buildah --root $(IMAGE_STORE)/storage --runroot $(IMAGE_STORE)/run \
  --storage-driver vfs

.PHONY: image image-tools image-test-base

## buildah and debootstrap (Debian packages) when either is missing.
image-tools:
	@if command -v buildah >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; then \
	  exit 0; \
	fi; \
	set -e; \
	$(IMAGE_SUDO) apt-get -o DPkg::Lock::Timeout=600 update; \
	DEBIAN_FRONTEND=noninteractive $(IMAGE_SUDO) apt-get -o DPkg::Lock::Timeout=600 \
	  install -y --no-install-recommends buildah debootstrap; \
	buildah --version

# What the image is made of: the Containerfile, the sources it copies and the build
# arguments. Even a fully cached build copies the build stage whole under vfs (minutes),
# so an image already labelled with the same digest is not built again.
IMAGE_INPUTS = $(shell { tar -c --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  --exclude=__pycache__ --exclude="*.so" --exclude=compiled.json Containerfile .containerignore \
  pyproject.toml README.md mk/engine_build.py \
  scheduler policies reports proto; echo "$(IMAGE_BASE) $(IMAGE_EXTRAS)"; } | sha256sum | cut -c1-32)

# Every rebuild would leave the last build's steps behind as untagged vfs copies (about
# 800 MB each, tens of GB after a few days), so after a build only the steps this build
# used or made are kept: they are the next build's cache.
#
## The image $(IMAGE) from the Containerfile, FROM $(IMAGE_BASE).
image: image-tools
	@inputs=$(IMAGE_INPUTS); \
	built=$$($(BUILDAH) inspect --type image --format '{{index .Docker.Config.Labels "io.fairpool.inputs"}}' \
	  $(IMAGE) 2>/dev/null || true); \
	if [ "$$built" = "$$inputs" ]; then echo "$(IMAGE) is up to date ($$inputs)"; exit 0; fi; \
	set -eo pipefail; mkdir -p $(IMAGE_STORE); log=$(IMAGE_STORE)/last-build.log; set -x; \
	$(BUILDAH) build --isolation chroot --layers --build-arg BASE=$(IMAGE_BASE) \
	  --build-arg EXTRAS=$(IMAGE_EXTRAS) --label io.fairpool.inputs=$$inputs \
	  --file Containerfile --tag $(IMAGE) . 2>&1 | tee $$log; \
	set +x; \
	keep=$$(sed -n 's/^--> \(Using cache \)\{0,1\}\([0-9a-f]\{12\}\).*/\2/p' $$log | sort -u); \
	for id in $$($(BUILDAH) images --all --noheading --filter dangling=true --format '{{.ID}}'); do \
	  case " $$(echo $$keep) " in *" $${id:0:12} "*) ;; *) $(BUILDAH) rmi $$id >/dev/null 2>&1 || true ;; esac; \
	done; \
	echo "kept this build's $$(echo $$keep | wc -w) cached steps; $$($(BUILDAH) images --all --noheading | wc -l) images in $(IMAGE_STORE)"

## A python3 base image from Debian's packages, built once (kept in $(IMAGE_STORE)).
image-test-base: image-tools
	@if $(BUILDAH) inspect --type image $(IMAGE_TEST_BASE) >/dev/null 2>&1; then exit 0; fi; \
	set -e; \
	root=$(IMAGE_STORE)/rootfs; $(IMAGE_SUDO) rm -rf $$root; mkdir -p $(IMAGE_STORE); \
	$(IMAGE_SUDO) debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
	  bookworm $$root $(DEBIAN_MIRROR); \
	if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then \
	  $(IMAGE_SUDO) cp /usr/local/share/ca-certificates/*.crt $$root/usr/local/share/ca-certificates/; \
	  $(IMAGE_SUDO) chroot $$root update-ca-certificates; \
	fi; \
	$(IMAGE_SUDO) chroot $$root apt-get clean; \
	$(IMAGE_SUDO) rm -rf $$root/var/lib/apt/lists/* $$root/usr/share/doc/* \
	  $$root/usr/share/man/* $$root/usr/share/locale/* $$root/dev/* $$root/var/cache/*; \
	ctr=$$($(BUILDAH) from scratch); \
	mnt=$$($(BUILDAH) mount $$ctr); \
	$(IMAGE_SUDO) cp -a $$root/. $$mnt/; \
	$(BUILDAH) umount $$ctr; \
	$(BUILDAH) config --env PATH=/usr/local/bin:/usr/bin:/bin --cmd /bin/bash $$ctr; \
	$(BUILDAH) commit --rm $$ctr $(IMAGE_TEST_BASE); \
	$(IMAGE_SUDO) rm -rf $$root

SYSTEM_DEPS += image-test-base
