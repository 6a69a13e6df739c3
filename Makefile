# `make run` starts the stack, `make test` runs the tests; both set up what they need first.
VENV := .venv
PY := $(VENV)/bin/python
PROTO_OUT := grpc_server/generated

.PHONY: all setup run stop status test lint types protos check-protos fmt clean bench-ingest bench-ingest-decode bench-read bench-speedups \
	demo bench-serve bench-predict bench-prediction-log bench-peers faults bench

all: lint types check-protos test

setup:
	bash scripts/setup.sh

run: setup
	$(VENV)/bin/fstore up

stop:
	$(VENV)/bin/fstore down

status:
	$(VENV)/bin/fstore status

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

fmt: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

types: setup
	$(VENV)/bin/mypy featurestore tasks bridge grpc_server tests bench demo

# The one place generated protobuf code comes from. protos/kserve/grpc_predict_v2.proto is
# KServe's Open Inference Protocol file, unmodified (see protos/kserve/README.md for its source).
# Mapping protos/ to the output package makes the generated modules import each other
# as grpc_server.generated.*.
protos: setup
	PATH=$(VENV)/bin:$$PATH $(PY) -m grpc_tools.protoc -I$(PROTO_OUT)=protos \
		--python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
		$(PROTO_OUT)/featurestore.proto
	PATH=$(VENV)/bin:$$PATH $(PY) -m grpc_tools.protoc -I$(PROTO_OUT)=protos/kserve \
		--python_out=. --grpc_python_out=. --mypy_out=. --mypy_grpc_out=. \
		$(PROTO_OUT)/grpc_predict_v2.proto

check-protos: setup
	rm -rf /tmp/fstore-protos && mkdir -p /tmp/fstore-protos
	PATH=$(VENV)/bin:$$PATH $(PY) -m grpc_tools.protoc -I$(PROTO_OUT)=protos \
		--python_out=/tmp/fstore-protos --grpc_python_out=/tmp/fstore-protos \
		--mypy_out=/tmp/fstore-protos --mypy_grpc_out=/tmp/fstore-protos \
		$(PROTO_OUT)/featurestore.proto
	PATH=$(VENV)/bin:$$PATH $(PY) -m grpc_tools.protoc -I$(PROTO_OUT)=protos/kserve \
		--python_out=/tmp/fstore-protos --grpc_python_out=/tmp/fstore-protos \
		--mypy_out=/tmp/fstore-protos --mypy_grpc_out=/tmp/fstore-protos \
		$(PROTO_OUT)/grpc_predict_v2.proto
	for f in /tmp/fstore-protos/$(PROTO_OUT)/*; do \
		diff -u "$(PROTO_OUT)/$$(basename $$f)" "$$f" || { echo "generated code drifted: run make protos"; exit 1; }; \
	done

bench-ingest: setup
	$(PY) -m bench.ingest

clean:
	rm -rf .state

bench-read: setup
	$(PY) -m bench.read

# The bridge's parse + validate + batch step, CPU per 10k events: Python loop, msgspec, Arrow.
bench-ingest-decode: setup
	$(PY) -m bench.ingest_decode

# What each read-path speed-up pays against the plain way, in one run (README, Benchmarks).
bench-speedups: setup
	$(PY) -m bench.speedups

# Predictor.predict in-process against a bare pipelined HMGET (needs only Redis).
bench-predict: setup
	$(PY) -m bench.predict_inprocess

# What the prediction log costs a serving process, in-process (needs only Redis).
bench-prediction-log: setup
	$(PY) -m bench.prediction_log_cost

# The credit-risk model from training to Predict over gRPC (starts the stack if needed).
demo: setup
	$(PY) -m demo

# The load comes from ghz (Go, pinned in bench/ghz.py), installed into .state/tools by
# `go install` when absent; a Python client's figures are kept beside (*_pyclient).
bench-serve: setup
	$(PY) -m bench.ghz
	$(PY) -m bench.serve

# bench-ingest, bench-read and bench-serve in turn (short forms; BENCH_ARGS=--full for full
# length), one table of figures, floors and targets; the last line is one JSON object.
bench: setup
	$(PY) -m bench.all $(BENCH_ARGS)

# SIGKILL each part of the stack in turn under steady load; exactly-once and recovery checks.
faults: setup
	$(PY) -m bench.faults

# Side by side with Feast (pinned, in a virtual environment of its own under .state/peers); not in CI.
bench-peers: setup
	$(PY) -m bench.peers
