#!/usr/bin/env bash
# `make test-scale`: the scale tests (tests/scale/test_scale.py, marker `scale`), as root. The tests start and stop
# every service themselves; this trap stops whatever a killed test run left behind (pid files under the state dir).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PRUNESEC_SCALE_STATE=${PRUNESEC_SCALE_STATE:-/tmp/prunesec-scale}
cleanup() {
    bash tests/scale/slurm_down.sh "$PRUNESEC_SCALE_STATE/slurm" >/dev/null 2>&1
    bash tests/scale/postgres_down.sh "$PRUNESEC_SCALE_STATE/postgres" >/dev/null 2>&1
    [[ -x .venv-ray/bin/ray && -d $PRUNESEC_SCALE_STATE/ray ]] && .venv-ray/bin/ray stop --force >/dev/null 2>&1
    return 0
}
trap cleanup EXIT
started=$SECONDS
.venv/bin/python -m pytest tests/scale -m scale -p no:cacheprovider -v -s "$@"
code=$?
echo "make test-scale: exit code $code in $((SECONDS - started)) s"
exit $code
