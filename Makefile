# The one entry point. Each target is a line or two; the logic lives in Python.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install run test test-e2e lint format bench pipeline manifests infra-lint images images-local test-images clean

install:  ## create .venv with the package, dev tools, helm and the Debian tools (idempotent)
	python3 tools/bootstrap.py

run: install  ## end to end on the embedded defaults: the training pipeline (kfp.local), then serve and monitor it
	$(PY) -m cli demo

test: install  ## unit + integration tests (real local servers); e2e is opt-in
	$(PY) -m pytest tests

test-spark: install  ## the slow property-based Spark = in-memory feature parity test (a local Spark session)
	$(PY) -m pytest tests -m spark

test-e2e: install  ## tests that need a Kubernetes cluster with KServe and Kubeflow
	$(PY) -m pytest tests -m e2e

lint: install  ## ruff format check, ruff lint, mypy, import-linter contracts, actionlint
	$(PY) -m ruff format --check . && $(PY) -m ruff check . && $(PY) -m mypy && $(VENV)/bin/lint-imports
	$(VENV)/bin/actionlint

format: install
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

bench: install  ## benchmarks; results go to docs/PERFORMANCE.md
	$(PY) -m bench

infra-lint: install  ## parse every Bicep file, checkov on infra/, az bicep build where the Azure CLI exists
	$(PY) tools/infra_lint.py

pipeline: install  ## compile the training pipeline to build/pipelines/fraud-training.yaml
	$(PY) -m cli pipeline compile --output build/pipelines/fraud-training.yaml

manifests: install  ## render the kustomize overlays to build/manifests/
	$(PY) tools/render_manifests.py

images:  ## build the pipeline, serve and drift images (needs a Docker engine)
	$(PY) tools/build_images.py

images-local: install  ## no Docker, no registry: podman builds on a Debian base (mmdebstrap), then serve + one v2 infer
	$(PY) tools/images_local.py --install-tools --targets pipeline serve drift

test-images: install  ## the `images` tests (images-local under pytest; installs podman, mmdebstrap, runc)
	$(PY) -m pytest tests -m images

clean:
	rm -rf build .fraud .pytest_cache .mypy_cache .ruff_cache
