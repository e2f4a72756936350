#!/usr/bin/env bash
# Run ansible-test on a staged copy of the collection (ansible-test refuses symlinked paths),
# with a local stand-in for its pip bootstrap download (no internet here).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VENV:-$here/.venv}"
py="$VENV/bin/python"
# Outside the repository: ansible-test would otherwise list files with git from the enclosing repo.
# A private directory per run, so two runs never clobber each other's staged copy.
stage_root="$(mktemp -d "${TMPDIR:-/tmp}/shadownet-ansible-test.XXXXXX")"
trap 'rm -rf "$stage_root"' EXIT
stage="$stage_root/ansible_collections/shadownet/proxmox"
mkdir -p "$stage"
# The collection as shipped, plus its unit tests and dev scripts. Not staged: benchmarks/, tests/integration/ and
# tests/lab/ (the simulator and the namespace lab): dev-only tooling outside the collection artifact (galaxy.yml
# build_ignore), checked by running them in pytest rather than by ansible-test's plugin lint rules.
(cd "$here" && git ls-files -co --exclude-standard -z \
    | grep -zv -e '^benchmarks/' -e '^tests/integration/' -e '^tests/lab/' \
    | xargs -0 -I{} cp --parents {} "$stage/")
# ansible-test wants a git-free tree or a real repository; a plain copy is fine.
# The pip version ansible-test bootstraps (get_venv_packages: pip='X.Y'); its download is replaced below.
pipver="$(grep -ho "pip='[0-9.]*'" "$("$py" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py" | head -1 | tr -dc '0-9.')"
cache="$HOME/.ansible/test/cache"; mkdir -p "$cache"
if [ -n "$pipver" ]; then
    name="get_pip_$(echo "$pipver" | tr . _).py"
    cat > "$cache/$name" <<PY
import subprocess, sys
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade'])
args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
sys.exit(subprocess.call([sys.executable, '-m', 'pip', 'install'] + args))
PY
fi
pyver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
cd "$stage"
case "${1:-sanity}" in
    sanity) shift || true
        "$VENV/bin/ansible-test" sanity --venv --python "$pyver" --skip-test pslint "$@" ;;
    *) "$VENV/bin/ansible-test" "$@" ;;
esac
