# directord %preun. $1: 0 erase, 1 upgrade. Erasing stops the daemon, which steps
# down cleanly (the peer takes over at once).
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now directord.service >/dev/null 2>&1 || :
fi
exit 0
