# directord %postun. $1: 0 erase, 1 upgrade. The group stays; a modified
# /etc/directord.toml is kept as /etc/directord.toml.rpmsave by rpm.
if [ "$1" -eq 0 ]; then
    [ -d /run/systemd/system ] && systemctl daemon-reload >/dev/null 2>&1
    rmdir /var/lib/directord 2>/dev/null
fi
exit 0
