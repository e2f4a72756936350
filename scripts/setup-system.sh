#!/usr/bin/env bash
# Install the Debian packages the lab and the tests need (networking tools and
# keepalived; prometheus, which brings promtool, for the Prometheus history backend's tests; chromium for the
# report test). Skips apt entirely when everything is already present.
set -euo pipefail
pkgs=(iproute2 nftables keepalived tcpdump iperf3 rsync openssh-client openssh-server shellcheck ethtool procps cron prometheus
      chromium)  # chromium: the headless-browser test of the HTML scaling report
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup-system: all packages present"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-system: missing ${missing[*]}; run as root (or: sudo $0)" >&2
    exit 1
fi
echo "setup-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine's mirror may fail a request now and then: each download is retried (Acquire::Retries), and the
# update and the install are tried up to three times before setup gives up.
apt_opts=(-o Acquire::Retries=3)
retry() {
    local i
    for i in 1 2 3; do
        "$@" && return 0
        echo "setup-system: '$*' failed (attempt $i of 3)" >&2
        [ "$i" -lt 3 ] && sleep $((i * 10))
    done
    return 1
}
retry apt-get "${apt_opts[@]}" update -qq
# keepalived, sshd and prometheus must not start as system services: the lab and the tests run their own instances.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
retry apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup-system: done"
