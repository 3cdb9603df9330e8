# directord %post. $1: 1 install, 2 upgrade.
install -d -m 0750 -o root -g directord /var/lib/directord
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
# The unit is not enabled: edit /etc/directord.toml, then systemctl enable --now
# directord. An upgrade of a running director re-execs the new binary in place,
# keeping the role, the VIPs and the IPVS table (no failover).
if [ "$1" -ge 2 ] && [ -S /run/directord/directord.sock ]; then
    /usr/bin/directorctl restart ||
        echo "directord: run 'directorctl restart' to switch to the new version (no failover)" >&2
fi
exit 0
