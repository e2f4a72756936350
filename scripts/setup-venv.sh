#!/usr/bin/env bash
# Create .venv with the newest real Python interpreter available (never a pyenv shim)
# and the ansible-core release that matches it. Idempotent: re-running only
# installs what changed in the requirements files.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${VENV:-$here/.venv}"

pick_python() {
    local cand
    for cand in \
        "${SHADOWNET_PYTHON:-}" \
        /usr/bin/python3.13 /usr/local/bin/python3.13 "$HOME"/.pyenv/versions/3.13*/bin/python3.13 \
        /usr/bin/python3.12 /usr/local/bin/python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 \
        /usr/bin/python3.11 /usr/local/bin/python3.11 "$HOME"/.pyenv/versions/3.11*/bin/python3.11; do
        if [ -z "$cand" ] || [ ! -x "$cand" ]; then continue; fi
        case "$cand" in */shims/*) continue ;; esac
        if "$cand" -c 'import ssl, sqlite3, venv, ensurepip' >/dev/null 2>&1; then
            echo "$cand"; return 0
        fi
    done
    return 1
}

if [ ! -x "$venv/bin/python" ]; then
    py="$(pick_python)" || { echo "setup-venv: no usable Python 3.11+ interpreter found" >&2; exit 1; }
    echo "setup-venv: creating $venv with $py"
    "$py" -m venv "$venv"
fi
pyver="$("$venv/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
case "$pyver" in
    3.11) core='ansible-core>=2.19,<2.20' ;;
    *)    core='ansible-core>=2.20,<2.22' ;;
esac
stamp="$venv/.shadownet-reqs"
want="$(cat "$here/requirements.txt" "$here/requirements-dev.txt" | sha256sum | cut -c1-16)-$core"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # pip.conf here may name local indexes that do not exist; hide only those warnings.
    { "$venv/bin/python" -m pip install -q --upgrade pip 2>&1; } | { grep -v '^WARNING: Location' || true; }
    { "$venv/bin/python" -m pip install -q "$core" -r "$here/requirements.txt" -r "$here/requirements-dev.txt" 2>&1; } \
        | { grep -v '^WARNING: Location' || true; }
    echo "$want" > "$stamp"
fi
echo "setup-venv: $("$venv/bin/python" --version), $("$venv/bin/ansible" --version | head -1)"
