# Shared by functions/*/Makefile. sam build runs `make build-<LogicalId>` in a copy
# of the function's folder, with ARTIFACTS_DIR set. Runtime dependencies live in the
# layer; a function's requirements.txt normally holds only a comment.

PIP_FLAGS := --platform manylinux2014_x86_64 --implementation cp --python-version 3.13 \
	--only-binary=:all: --upgrade --no-compile --quiet

define build-function
cp *.py "$(ARTIFACTS_DIR)/"
if [ -f requirements.txt ] && grep -qvE '^[[:space:]]*(#|$$)' requirements.txt; then \
	python3 -m pip install $(PIP_FLAGS) --target "$(ARTIFACTS_DIR)" -r requirements.txt; \
fi
endef
