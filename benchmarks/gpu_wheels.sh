#!/bin/sh
# Wheels for the lent GPU machines (Python 3.12, PyTorch, transformers, accelerate, OpenCV already there, no
# network): diffusers, PyAV and importlib_metadata are missing. Run here, then name .wheels in the run's carry:
#   pip install --no-deps .wheels/*.whl && PYTHONPATH=. python3 benchmarks/speed.py --only gen:paper ...
set -eu
cd "$(dirname "$0")/.."
python3 -m pip download --only-binary=:all: --no-deps --python-version 3.12 --platform manylinux_2_28_x86_64 \
    -d .wheels "diffusers==0.42.1" "av==18.1.0" "importlib_metadata"
ls -l .wheels
