#!/usr/bin/env bash
# Build the wheels that benchmarks/gpu_run.sh installs on an offline GPU machine (Python 3.12, x86_64 Linux,
# torch / transformers / peft / accelerate already there, no TRL). Run it here, from the repository root:
#
#   bash benchmarks/gpu_wheels.sh                 # ours + TRL 1.16 + datasets' small deps + pytest (a few MB)
#   WITH_ARROW=1 bash benchmarks/gpu_wheels.sh    # also pyarrow and pandas (~55 MB), when the GPU machine lacks them
#
# Into $WHEELS (default benchmarks/.wheels, git-ignored), at the versions installed in this interpreter (the
# set the tests ran with; TRL is pinned to 1.16.0):
#   pip wheel --no-deps . -w $WHEELS
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       --implementation cp -d $WHEELS trl==1.16.0 datasets==X dill==X ...
# gpu_run.sh then installs only what the GPU machine cannot import, with pip install --no-deps --no-index.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="${WHEELS:-$ROOT/benchmarks/.wheels}"
PY="${PYTHON:-python3}"
mkdir -p "$WHEELS"

pinned() {  # "name==version" of what this interpreter has installed
    "$PY" -c "import importlib.metadata as m, sys; print(' '.join(f'{n}=={m.version(n)}' for n in sys.argv[1:]))" "$@"
}
SMALL="datasets dill multiprocess xxhash fsspec pytest pluggy iniconfig"
SPECS="trl==1.16.0 $(pinned $SMALL)"
if [[ "${WITH_ARROW:-0}" == "1" ]]; then SPECS="$SPECS $(pinned pyarrow pandas)"; fi

"$PY" -m pip wheel --no-deps --disable-pip-version-check -q "$ROOT" -w "$WHEELS"
# shellcheck disable=SC2086
"$PY" -m pip download --no-deps --disable-pip-version-check -q --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --implementation cp -d "$WHEELS" $SPECS
ls -la "$WHEELS"
du -sh "$WHEELS"
