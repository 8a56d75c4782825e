#!/usr/bin/env bash
# The whole GPU check of the trainer as one script (stage limits add up to 475 s: under 8 minutes).
#
#   bash benchmarks/gpu_run.sh            # on the GPU machine, from the repository root
#   bash benchmarks/gpu_run.sh --dry-run  # anywhere: the same stages on CPU in the tiny configuration
#                                         # (also GPU_RUN_DRY=1); a couple of minutes
#
# Stages, each under its own time limit, everything written under $OUT (default benchmarks/results/gpu_run):
#   1. env.json: python, torch, CUDA, device, the packages present; nvidia-smi.txt
#   2. install what is missing from the wheels in $WHEELS (default benchmarks/.wheels), offline:
#      pip install --no-deps --no-index; our package falls back to PYTHONPATH=src when no wheel is there
#   3. the GPU test tier (100 s): pytest tests/test_gpu.py --run-gpu -k cuda (the CPU targets run in the
#      default suite) -> gpu_tests.txt, gpu_tests.xml (junit, with the differences each test measured),
#      gpu_tests_measured.json
#   4. the GPU section of the trainer benchmark (300 s): ours vs TRL on the Qwen2.5-0.5B/1.5B shapes, with
#      ours' last (untimed) step on 1.5b profiled -> trainer_gpu.json, trainer_gpu.txt,
#      profile/1.5b/profile_ops.txt (torch.profiler, its update) and profile_phases.json (seconds per phase)
#   5. one run of ours with $GPU_RUN_VARIANT (default generation_batch_size=64: one generate call per step,
#      like TRL) on 1.5b (75 s) -> trainer_gpu_variant.json, trainer_gpu_variant.txt
#
# The GPU machine has Python 3.12, torch, transformers, peft and accelerate but no internet and no TRL. Build
# the wheels here first (benchmarks/gpu_wheels.sh) and carry benchmarks/.wheels and
# benchmarks/.models/bench-tokenizer (the benchmark tokenizer) with the run. Exit status: 0 when every stage passed, 1 when one failed (a test
# failed, a run of ours failed, or a stage ran out of time); the other stages run all the same.
set -u -o pipefail

DRY=0
if [[ "${1:-}" == "--dry-run" || "${GPU_RUN_DRY:-0}" == "1" ]]; then DRY=1; fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0; fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
OUT="${OUT:-$ROOT/benchmarks/results/gpu_run}"
WHEELS="${WHEELS:-$ROOT/benchmarks/.wheels}"
PY="${PYTHON:-$(command -v python3 || command -v python)}"  # PYTHON=... picks another interpreter
VARIANT="${GPU_RUN_VARIANT-generation_batch_size=64}"
mkdir -p "$OUT"
START=$(date +%s)
STATUS=0
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

log() { echo "[gpu_run +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/gpu_run.log"; }

# stage NAME SECONDS COMMAND...: run COMMAND under a time limit, its output to $OUT/NAME.txt
stage() {
    local name=$1 limit=$2; shift 2
    log "$name: $* (limit ${limit}s)"
    timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.txt" 2>&1
    local rc=$?
    tail -n 25 "$OUT/$name.txt"
    log "$name: exit $rc"
    return $rc
}

# ---- 1. environment
log "mode: $([[ $DRY == 1 ]] && echo 'dry run (CPU, tiny configuration)' || echo GPU); OUT=$OUT"
command -v nvidia-smi > /dev/null && nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
"$PY" - > "$OUT/env.json" 2>&1 <<'EOF'
import importlib.metadata as md, json, platform, sys
out = {"python": sys.version.split()[0], "platform": platform.platform()}
for name in ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "pyarrow", "pandas", "pytest",
             "numpy", "scipy", "tqdm", "multireward-grpo"):
    try:
        out[name] = md.version(name)
    except md.PackageNotFoundError:
        out[name] = None
try:
    import torch
    out["cuda_available"] = torch.cuda.is_available()
    out["cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        out["device_name"] = torch.cuda.get_device_name()
        out["bf16"] = torch.cuda.is_bf16_supported()
except Exception as exc:  # noqa: BLE001
    out["torch_error"] = repr(exc)
print(json.dumps(out, indent=2))
EOF
cat "$OUT/env.json"

# ---- 2. offline installs of what is missing
if [[ $DRY == 0 && -d "$WHEELS" ]]; then
    missing=$("$PY" - "$WHEELS" <<'EOF'
import importlib.util, pathlib, sys
# wheel file prefix -> import name; installed only when the import name is missing
names = {"multireward_grpo": "multireward_grpo", "trl": "trl", "datasets": "datasets", "dill": "dill",
         "multiprocess": "multiprocess", "xxhash": "xxhash", "fsspec": "fsspec", "pyarrow": "pyarrow",
         "pandas": "pandas", "pytest": "pytest", "pluggy": "pluggy", "iniconfig": "iniconfig", "scipy": "scipy"}
for wheel in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
    prefix = wheel.name.split("-")[0].lower()
    if prefix in names and importlib.util.find_spec(names[prefix]) is None:
        print(wheel)
EOF
)
    if [[ -n "$missing" ]]; then
        log "installing from $WHEELS: $(echo "$missing" | xargs -n1 basename | tr '\n' ' ')"
        # shellcheck disable=SC2086
        "$PY" -m pip install --no-deps --no-index --disable-pip-version-check -q $missing >> "$OUT/gpu_run.log" 2>&1 \
            || log "pip install failed (see gpu_run.log); going on with what is installed"
    fi
fi
if ! "$PY" -c "import multireward_grpo" 2> /dev/null; then
    export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
    log "multireward_grpo not installed: using PYTHONPATH=$ROOT/src"
fi

# ---- 3. the GPU test tier
TEST_ARGS=(-q -p no:cacheprovider -o junit_family=xunit1 --junitxml "$OUT/gpu_tests.xml" tests/test_gpu.py)
if [[ $DRY == 1 ]]; then
    stage gpu_tests 300 "$PY" -m pytest "${TEST_ARGS[@]}" -k "cpu-float32-tiny" || STATUS=1
else
    stage gpu_tests 100 "$PY" -m pytest "${TEST_ARGS[@]}" --run-gpu -k cuda || STATUS=1
fi
"$PY" - "$OUT/gpu_tests.xml" > "$OUT/gpu_tests_measured.json" 2> /dev/null <<'EOF'
import json, sys, xml.etree.ElementTree as ET
rows = {}
for case in ET.parse(sys.argv[1]).iter("testcase"):
    props = {p.get("name"): float(p.get("value")) for p in case.iter("property")}
    state = "failed" if case.find("failure") is not None or case.find("error") is not None else (
        "skipped" if case.find("skipped") is not None else "passed")
    rows[case.get("name")] = {"outcome": state, **props}
print(json.dumps(rows, indent=2))
EOF

# ---- 4. the GPU section of the trainer benchmark, with a profile of one step
BENCH=("$PY" benchmarks/trainer_bench.py --json "$OUT/trainer_gpu.json" --profile-dir "$OUT/profile")
if [[ $DRY == 1 ]]; then
    stage trainer_gpu 400 "${BENCH[@]}" --tiny --device cpu --gpu-steps 2 || STATUS=1
else
    stage trainer_gpu 300 "${BENCH[@]}" --gpu --gpu-timeout 120 || STATUS=1
fi
if [[ -n "$VARIANT" ]]; then
    OPTS=()
    IFS=',' read -ra KV <<< "$VARIANT"
    for kv in "${KV[@]}"; do OPTS+=(--ours-option "$kv"); done
    VAR=("$PY" benchmarks/trainer_bench.py --json "$OUT/trainer_gpu_variant.json" --skip-trl "${OPTS[@]}")
    if [[ $DRY == 1 ]]; then
        stage trainer_gpu_variant 300 "${VAR[@]}" --tiny --device cpu --gpu-steps 2 || STATUS=1
    else
        stage trainer_gpu_variant 75 "${VAR[@]}" --gpu --gpu-sizes 1.5b --gpu-timeout 70 || STATUS=1
    fi
fi

log "done in $(( $(date +%s) - START )) s, status $STATUS; files: $(cd "$OUT" && find . -type f | sort | tr '\n' ' ')"
exit $STATUS
