#!/usr/bin/env bash
# make lab: start the PVE simulator with the lab cluster, run playbooks/lab.yml against it (build, mirror,
# forecast and scale, failover drill), print what happened, and stop everything that was started.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
VENV="${VENV:-$here/.venv}"
export PATH="$VENV/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$here/.build/collections"
export ANSIBLE_PYTHON_INTERPRETER="$VENV/bin/python"
export ANSIBLE_STDOUT_CALLBACK=default ANSIBLE_NOCOLOR=1 ANSIBLE_RETRY_FILES_ENABLED=0
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

work="$(mktemp -d /tmp/shadownet-lab.XXXXXX)"
# The reconcile runs' HTML reports outlive the lab (the rest of $work does not): latest.html is the newest.
reports="${SHADOWNET_LAB_REPORTS:-$here/.build/lab/reports}"
sim_pid=""
cleanup() {
    if [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null; then
        wait "$sim_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

host="${SHADOWNET_LAB_HOST:-127.0.0.2}"
python tests/lab/pvesim.py serve --host "$host" --port 0 --cluster inventories/lab/cluster.yml \
    --certs "$work/certs" --time-scale 0 > "$work/sim.out" 2> "$work/sim.err" &
sim_pid=$!
for _ in $(seq 1 100); do
    grep -q '^ready ' "$work/sim.out" 2>/dev/null && break
    kill -0 "$sim_pid" 2>/dev/null || { cat "$work/sim.err" >&2; echo "lab: the simulator did not start" >&2; exit 1; }
    sleep 0.1
done
ready="$(grep '^ready ' "$work/sim.out")" || { echo "lab: the simulator never said ready" >&2; exit 1; }
url="$(echo "$ready" | awk '{print $2}')"
PROXMOX_CA_PATH="${ready##* ca=}"
export PROXMOX_CA_PATH
hostport="${url#https://}"
export PROXMOX_HOST="${hostport%:*}" PROXMOX_PORT="${hostport##*:}"
eval "$(python - <<'PY'
import yaml
c = yaml.safe_load(open('inventories/lab/cluster.yml'))
root = next(u for u in c['users'] if u['userid'] == 'root@pam')
name, secret = sorted(root['tokens'].items())[0]
print('export PROXMOX_USER=root@pam PROXMOX_TOKEN_ID=%s PROXMOX_TOKEN_SECRET=%s' % (name, secret))
PY
)"
echo "lab: PVE simulator at $url (CA $PROXMOX_CA_PATH), token $PROXMOX_USER!$PROXMOX_TOKEN_ID"
# The reconciles are stateless (the forecast reads PVE's RRD): a developer's own history settings do not apply.
unset SHADOWNET_HISTORY SHADOWNET_HISTORY_BACKEND
date +%s > "$work/started"
ansible-playbook -i inventories/lab/hosts.yml playbooks/lab.yml -e "shadownet_lab_work=$work" \
    -e "shadownet_report_dir=$reports" "$@"
if [ -f "$reports/latest.html" ]; then
    echo "lab: scaling report $reports/latest.html (open it in a browser; the last 10 runs are in $reports)"
fi
echo "lab: done; stopping the simulator"
