#!/bin/sh
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# One differential replication run of a primary into its shadow (installed by the state_replication role,
# started by its systemd timer or cron job, and once by the role itself).
#
#   sn-repl-sync.sh CONF
#
# CONF (written by the role) sets SN_REPL_* variables; SN_REPL_PATHS names a file of "SRC DEST" lines.
# Each SRC directory is pushed with rsync over SSH into DEST on the shadow, with the dedicated key whose
# forced command on the shadow only accepts pushes into the declared directories. Runs never overlap
# (flock); a finished run records its time in SN_REPL_STATE_DIR/last_success (the achieved RPO).
set -eu
set -f

conf=${1:?usage: sn-repl-sync.sh CONF}
# shellcheck source=/dev/null
. "$conf"

: "${SN_REPL_HOST:?}" "${SN_REPL_PORT:?}" "${SN_REPL_USER:?}" "${SN_REPL_KEY:?}" "${SN_REPL_KNOWN_HOSTS:?}"
: "${SN_REPL_PATHS:?}" "${SN_REPL_STATE_DIR:?}" "${SN_REPL_RSYNC_OPTIONS:=--archive}"
: "${SN_REPL_CONNECT_TIMEOUT:=10}"

exec 9>"$SN_REPL_STATE_DIR/lock"
if ! flock -n 9; then
    echo "sn-repl-sync: a previous run is still going; skipping this one" >&2
    exit 0
fi

case $SN_REPL_HOST in
    *:*) target="[$SN_REPL_HOST]" ;;
    *) target=$SN_REPL_HOST ;;
esac
ssh_cmd="ssh -F none -i $SN_REPL_KEY -p $SN_REPL_PORT -o BatchMode=yes -o IdentitiesOnly=yes"
ssh_cmd="$ssh_cmd -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$SN_REPL_KNOWN_HOSTS"
ssh_cmd="$ssh_cmd -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=$SN_REPL_CONNECT_TIMEOUT"

status=0
while read -r src dest; do
    [ -n "$src" ] || continue
    if [ ! -d "$src" ]; then
        echo "sn-repl-sync: $src does not exist on this primary" >&2
        status=1
        continue
    fi
    # Options are split on purpose (globbing is off); the role writes them from a checked list.
    # shellcheck disable=SC2086
    if ! rsync $SN_REPL_RSYNC_OPTIONS -e "$ssh_cmd" -- "$src/" "$SN_REPL_USER@$target:$dest/"; then
        echo "sn-repl-sync: pushing $src to $target:$dest failed" >&2
        status=1
    fi
done <"$SN_REPL_PATHS"

if [ "$status" -eq 0 ]; then
    date +%s >"$SN_REPL_STATE_DIR/last_success.tmp"
    mv -f "$SN_REPL_STATE_DIR/last_success.tmp" "$SN_REPL_STATE_DIR/last_success"
fi
exit "$status"
