# directord %pre: the group that may use the control socket (0660 root:directord)
# and that owns /var/lib/directord. $1: 1 install, 2 upgrade.
getent group directord >/dev/null || groupadd -r directord
exit 0
