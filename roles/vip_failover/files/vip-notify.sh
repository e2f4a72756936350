#!/bin/sh
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# keepalived notify script of shadownet.proxmox.vip_failover.
# Called as: vip-notify.sh STATE_DIR TYPE NAME STATE [PRIORITY]  (keepalived appends the last four).
# Appends one JSON line to STATE_DIR/transitions.log and replaces STATE_DIR/NAME.state with it.
set -eu
dir=$1
type=$2
name=$3
state=$4
prio=${5:-0}
[ "$type" = INSTANCE ] || exit 0
case $name in
    *[!A-Za-z0-9_.-]*) exit 2 ;;
esac
case $prio in
    ''|*[!0-9]*) prio=0 ;;
esac
now=$(date +%s.%N)
line=$(printf '{"time": %s, "instance": "%s", "state": "%s", "priority": %s}' "$now" "$name" "$state" "$prio")
# One short write with O_APPEND: concurrent notifications never interleave inside a line.
printf '%s\n' "$line" >> "$dir/transitions.log"
tmp="$dir/.$name.state.$$"
printf '%s\n' "$line" > "$tmp"
mv -f "$tmp" "$dir/$name.state"
