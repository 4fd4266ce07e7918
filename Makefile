# The two quick-start commands (README) and their building blocks. Every target sets up what it needs
# first; set-up is idempotent and quick when nothing changed.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export MUJOCO_GL ?= egl
# Keep test processes off other DDS traffic on the same machine.
export ROS_DOMAIN_ID ?= 42
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup build demo test lint format bench reliability clean

setup:
	@bash scripts/setup_env.sh

build: setup

demo: setup
	$(VENV)/lib/pixelvla_ros/demo --out runs/demo

test: setup lint
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(PY) -m pixelvla_ros.bench.model_latency
	$(PY) -m pixelvla_ros.bench.sim_speed
	$(PY) -m pixelvla_ros.bench.train_throughput
	$(PY) -m pixelvla_ros.bench.e2e_latency
	$(PY) -m pixelvla_ros.bench.rtde_jitter
	$(PY) -m pixelvla_ros.bench.convert_openvla

reliability: setup
	$(PY) -m pixelvla_ros.reliability

clean:
	rm -rf build install log
