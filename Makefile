# imagepipe — the two quickstart commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The core (imagepipe/), the tools (tools/) and the deploy tooling (infra.deploy) run from this
# checkout, ahead of anything installed.
export PYTHONPATH := $(CURDIR):$(CURDIR)/tools$(if $(PYTHONPATH),:$(PYTHONPATH))
STAGE ?= local
API_PORT ?= 8000
export API_PORT
PYTEST_ARGS ?=
BENCH_ARGS ?=
# `make test` finds (or starts) a RabbitMQ and hands its URL to whatever needs one.
WITH_BROKER = AMQP_URL="$$($(PY) -m imagepipe_dev broker-url)" && export AMQP_URL &&

# package/deploy/destroy default to the cloud stage; STAGE=... on the command line picks another.
CLOUD_STAGE = $(if $(filter command line environment,$(origin STAGE)),$(STAGE),prod)
DEPLOY = $(PY) -m infra.deploy

.PHONY: help venv chromium render docs vendor build demo dev bridge test test-unit soak bench lint clean \
	package deploy destroy

help:
	@echo "make demo     set up, run the stack, upload the samples, save variants to demo-out/"
	@echo "make dev      run the local stack in the foreground (API on http://127.0.0.1:$(API_PORT))"
	@echo "make bridge   start one more bridge against the running 'make dev' stack"
	@echo "make test     run the whole test suite (needs RabbitMQ; starts a private one if none answers)"
	@echo "make bench    benchmarks, each a ratio against a baseline from the same run (BENCH_ARGS=imaging ...)"
	@echo "make soak     long-running fault and load tests (not part of make test)"
	@echo "make build    render functions/*/.chalice/config.json (STAGE=$(STAGE)) and vendor the core"
	@echo "make docs     regenerate the generated parts of docs/ (the settings table) from the code"
	@echo "make lint     ruff, and mypy over the core, the bridge and the functions"
	@echo "make package  chalice package the functions and render the infra template (STAGE=prod), offline"
	@echo "make deploy   package, then deploy the stage to AWS (credentials and region from the environment)"
	@echo "make destroy  delete the stage's stacks (the photo bucket is kept)"

# One venv, filled with what a target needs (pyproject.toml's extras at requirements.txt's pins):
# `make demo` gets the local stack, `make package` chalice and cfn-lint, `make test` everything.
# Re-installed whenever the pins or the extras change; chalice needs pip<26.3.
venv: $(VENV)/.installed-dev
$(VENV)/.installed-%: pyproject.toml requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "pip<26.3"
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements.txt -e ".[$*]"
	touch $@

# The browser tests drive Debian's chromium through Playwright (Playwright's own browser download
# does not work here): install it when missing and we may, else say how.
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian's chromium for the browser tests ..."; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { apt-get update -qq >/dev/null && apt-get install -y -qq chromium >/dev/null; }; \
	else \
	  echo "note: $(CHROMIUM) is missing, so the browser tests are skipped;" \
	       "install Debian's chromium (sudo apt-get install chromium) to run them"; \
	fi

render: $(VENV)/.installed-local
	$(PY) -m imagepipe_dev render --stage $(STAGE)

docs: $(VENV)/.installed-local
	$(PY) -m imagepipe_dev render-docs

vendor: $(VENV)/.installed-local
	$(PY) -m imagepipe_dev vendor

build: render vendor

package: $(VENV)/.installed-deploy
	$(DEPLOY) package --stage $(CLOUD_STAGE)

deploy: $(VENV)/.installed-deploy
	$(DEPLOY) deploy --stage $(CLOUD_STAGE)

destroy: $(VENV)/.installed-deploy
	$(DEPLOY) destroy --stage $(CLOUD_STAGE)

demo: $(VENV)/.installed-local
	$(PY) -m imagepipe_dev demo

dev: $(VENV)/.installed-local
	$(PY) -m imagepipe_dev dev

bridge: $(VENV)/.installed-local
	$(PY) -m imagepipe_dev bridge

test: venv chromium
	$(WITH_BROKER) $(PY) -m pytest tests -q -p no:cacheprovider --timeout=300 -m "not soak" $(PYTEST_ARGS)

soak: venv
	$(WITH_BROKER) $(PY) -m pytest tests -q -p no:cacheprovider --timeout=3600 -m soak $(PYTEST_ARGS)

bench: venv
	$(WITH_BROKER) $(PY) -m imagepipe_dev.bench $(BENCH_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit -q -p no:cacheprovider $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf .run demo-out functions/*/vendor functions/*/.chalice/config.json
