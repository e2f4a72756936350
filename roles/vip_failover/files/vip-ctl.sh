#!/bin/sh
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# Helper of shadownet.proxmox.vip_failover, run by the role's handlers and the failover playbook.
#
#   vip-ctl.sh running PIDFILE            exit 0 when the keepalived of PIDFILE is alive, 1 otherwise
#   vip-ctl.sh reload PIDFILE             SIGHUP keepalived (reload without moving the VIP)
#   vip-ctl.sh cleanup STATE_DIR PIDFILE  remove VIPs left on interfaces by a keepalived that is not
#                                         running (e.g. killed with SIGKILL); prints "removed NAME VIP DEV"
#   vip-ctl.sh hold STATE_DIR NAME 0|1    1: the instance goes to FAULT and hands the VIP over; 0: release
#   vip-ctl.sh backstop BEAT_FILE MAX_AGE CHECK...
#                                         keepalived's once-a-second backstop: exit 0 while the watchdog
#                                         touched BEAT_FILE in the last MAX_AGE seconds (its track_file
#                                         verdict rules), else run CHECK (the watchdog's --once) itself
set -eu

running() {
    pidfile=$1
    [ -r "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    case $pid in
        ''|*[!0-9]*) return 1 ;;
    esac
    [ -r "/proc/$pid/comm" ] || return 1
    [ "$(cat "/proc/$pid/comm")" = keepalived ]
}

cmd=${1:-}
case $cmd in
    running)
        running "$2"
        ;;
    reload)
        if running "$2"; then
            kill -HUP "$(cat "$2")"
            echo reloaded
        else
            echo "keepalived is not running"
        fi
        ;;
    cleanup)
        dir=$2
        if running "$3"; then
            echo "keepalived is running: nothing to clean up"
            exit 0
        fi
        [ -r "$dir/vips" ] || exit 0
        while read -r name dev vip; do
            [ -n "$vip" ] || continue
            if ip -o addr show dev "$dev" 2>/dev/null | grep -qF " $vip "; then
                ip addr del "$vip" dev "$dev"
                echo "removed $name $vip $dev"
            fi
        done < "$dir/vips"
        ;;
    hold)
        dir=$2
        name=$3
        case $4 in
            0|1) ;;
            *) echo "hold value must be 0 or 1" >&2; exit 2 ;;
        esac
        case $name in
            ''|*[!A-Za-z0-9_.-]*) echo "bad instance name" >&2; exit 2 ;;
        esac
        if [ -r "$dir/$name.hold" ] && [ "$(cat "$dir/$name.hold")" = "$4" ]; then
            echo unchanged
        else
            printf '%s\n' "$4" > "$dir/$name.hold"
            echo changed
        fi
        ;;
    backstop)
        beat=$2
        max_age=$3
        shift 3
        case $max_age in
            ''|*[!0-9]*) echo "max age must be whole seconds" >&2; exit 2 ;;
        esac
        [ $# -gt 0 ] || { echo "no check command" >&2; exit 2; }
        # Two small forks instead of a Python interpreter every second: those starts stalled the VRRP
        # process's adverts on a busy guest (benchmarks/failover_gap.py --load).
        if changed=$(stat -c %Y "$beat" 2>/dev/null); then
            age=$(( $(date +%s) - changed ))
            if [ "$age" -ge 0 ] && [ "$age" -le "$max_age" ]; then
                exit 0
            fi
        fi
        exec "$@"
        ;;
    *)
        echo "usage: $0 running|reload|cleanup|hold|backstop ..." >&2
        exit 2
        ;;
esac
