# Shared by functions/*/Makefile and layers/room_history/Makefile. sam build runs
# `make build-<LogicalId>` in a copy of the resource's folder, with ARTIFACTS_DIR set and the
# caller's PATH. Runtime dependencies live in the layer; a function's requirements.txt
# normally holds only a comment.

PIP_FLAGS := --platform manylinux2014_x86_64 --implementation cp --python-version 3.13 \
	--only-binary=:all: --upgrade --no-compile --quiet

# The python3 on PATH may have no pip (Debian's, without python3-pip), so pip runs from the
# first of these that has it: $PYTHON when set, the SAM CLI's own .venv-sam (as the README
# installs it), the development .venv, then python3 on PATH. pip's cross-platform flags make
# the interpreter's own version irrelevant.
REPO_ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))..)
PIP_PYTHON := $(shell for py in "$$PYTHON" "$(REPO_ROOT)/.venv-sam/bin/python" \
		"$(REPO_ROOT)/.venv/bin/python" python3; do \
	[ -n "$$py" ] && "$$py" -m pip --version >/dev/null 2>&1 && { echo "$$py"; break; }; \
	done)
PIP = $(if $(PIP_PYTHON),"$(PIP_PYTHON)" -m pip,$(error no Python with pip found (tried $$PYTHON, \
	.venv-sam, .venv, python3): run `python3 -m venv .venv-sam && .venv-sam/bin/pip install \
	-r requirements-sam.txt` as the README says, or set PYTHON to a python that has pip))

define build-function
cp *.py "$(ARTIFACTS_DIR)/"
if [ -f requirements.txt ] && grep -qvE '^[[:space:]]*(#|$$)' requirements.txt; then \
	$(PIP) install $(PIP_FLAGS) --target "$(ARTIFACTS_DIR)" -r requirements.txt; \
fi
endef
