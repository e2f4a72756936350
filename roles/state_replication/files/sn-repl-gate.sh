#!/bin/sh
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
#
# Forced command of a primary's replication key on its shadow (authorized_keys "command=...,restrict").
#
#   sn-repl-gate.sh ALLOWED_FILE [RRSYNC [SERVING_STATE_FILE]]
#
# Accepts exactly one kind of request: an rsync *push* ("rsync --server <options> . <dest>") whose <dest> is
# one of the directories listed in ALLOWED_FILE (one absolute path per line). Anything else - a shell
# command, an rsync pull (--sender: reading from the shadow), another directory - is refused. The accepted
# request is handed to rrsync in write-only mode, restricted to that one directory, which checks every
# rsync option once more and never lets the transfer leave the directory.
#
# SERVING_STATE_FILE (optional) is this host's keepalived state file (vip_failover's <instance>.state, one JSON
# line): while it says MASTER this host serves the service, so pushes are refused: a primary that comes back
# from a failure must not overwrite what this shadow gathered before the catch-up has brought it back.
set -eu
set -f

allowed=${1:?usage: sn-repl-gate.sh ALLOWED_FILE [RRSYNC]}
rrsync=${2:-/usr/bin/rrsync}
serving=${3:-}
request=${SSH_ORIGINAL_COMMAND:-}

refuse() {
    echo "sn-repl-gate: refused: $1" >&2
    if command -v logger >/dev/null 2>&1; then
        logger -t sn-repl-gate "refused ($1): ${request}" || true
    fi
    exit 1
}

[ -n "$request" ] || refuse "no command (interactive logins are not allowed with this key)"
if [ -n "$serving" ] && [ -f "$serving" ] && grep -Eq '"state": *"MASTER"' "$serving"; then
    refuse "this host is serving (MASTER in $serving); its state goes back by a catch-up before fail-back"
fi
case $request in
    *[!A-Za-z0-9\ ./_=,:+@%-]*) refuse "unexpected characters in the request" ;;
esac

# Word splitting is the point here (globbing is off); the character check above leaves no quoting.
# shellcheck disable=SC2086
set -- $request
if [ "${1:-}" != rsync ] || [ "${2:-}" != --server ]; then
    refuse "not an rsync server request"
fi
shift 2

options=
while [ $# -gt 0 ] && [ "$1" != . ]; do
    case $1 in
        --sender) refuse "reading from the shadow is not allowed (replication is one way)" ;;
        -*) options="$options $1" ;;
        *) refuse "unexpected argument before the '.' separator" ;;
    esac
    shift
done
[ $# -eq 2 ] || refuse "expected exactly one destination directory"
dest=$2
while :; do
    case $dest in
        ?*/) dest=${dest%/} ;;
        *) break ;;
    esac
done
case $dest in
    /*) ;;
    *) refuse "the destination must be an absolute path" ;;
esac
grep -Fxq -- "$dest" "$allowed" || refuse "destination $dest is not a replicated path"
[ -d "$dest" ] || refuse "destination $dest does not exist on the shadow"

SSH_ORIGINAL_COMMAND="rsync --server${options} . ."
export SSH_ORIGINAL_COMMAND
exec "$rrsync" -wo "$dest"
