#!/bin/sh
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# keepalived notify script of shadownet.proxmox.vip_failover. Records every VRRP transition: appends one JSON
# line to STATE_DIR/transitions.log and replaces STATE_DIR/NAME.state with it.
#
#   vip-notify.sh --fifo STATE_DIR FIFO
#       keepalived's vrrp_notify_fifo_script (keepalived appends FIFO): reads keepalived's notify FIFO, one line
#       per transition (INSTANCE "web" MASTER 150), until keepalived closes it. The role uses this form:
#       keepalived writes the FIFO in the order of its transitions, and one reader records them in that order.
#   vip-notify.sh STATE_DIR TYPE NAME STATE [PRIORITY]
#       one transition (keepalived's per-instance notify). keepalived starts one such script per transition
#       and does not wait for it: after a quick MASTER -> BACKUP two of them race, and NAME.state can end up
#       saying MASTER on a member that is BACKUP (seen in the namespace lab under load).
set -eu

record() {
    # record DIR TYPE NAME STATE PRIORITY
    [ "$2" = INSTANCE ] || return 0
    case $3 in
        ''|*[!A-Za-z0-9_.-]*) echo "bad instance name" >&2; return 2 ;;
    esac
    case $4 in
        ''|*[!A-Z]*) return 0 ;;
    esac
    prio=$5
    case $prio in
        ''|*[!0-9]*) prio=0 ;;
    esac
    now=$(date +%s.%N)
    line=$(printf '{"time": %s, "instance": "%s", "state": "%s", "priority": %s}' "$now" "$3" "$4" "$prio")
    # One short write with O_APPEND: lines never interleave.
    printf '%s\n' "$line" >> "$1/transitions.log"
    tmp="$1/.$3.state.$$"
    printf '%s\n' "$line" > "$tmp"
    mv -f "$tmp" "$1/$3.state"
}

if [ "${1:-}" = --fifo ]; then
    dir=$2
    fifo=$3
    # keepalived sends SIGTERM before it writes the STOP lines of a shutdown, and closes the FIFO after them:
    # keep reading until that end of file.
    trap '' TERM
    while IFS= read -r event; do
        # INSTANCE "name" STATE PRIORITY (GROUP lines are skipped by record)
        # shellcheck disable=SC2086
        set -f -- $event
        [ $# -ge 3 ] || continue
        name=${2#\"}
        name=${name%\"}
        record "$dir" "$1" "$name" "$3" "${4:-0}" || true
    done < "$fifo"
    exit 0
fi

[ $# -ge 4 ] || { echo "usage: $0 --fifo STATE_DIR FIFO | STATE_DIR TYPE NAME STATE [PRIORITY]" >&2; exit 2; }
record "$1" "$2" "$3" "$4" "${5:-0}"
