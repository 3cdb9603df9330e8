#!/usr/bin/env bash
# Captures the generic netlink messages between ipvsadm and the kernel's IPVS, one
# command at a time, with strace. The hex it prints is what the unit tests in
# vipmgr/src/ipvs/ quote as "captured from the real kernel".
#
#   bash tests/vm/ipvs-vm.sh -- bash tests/vm/capture-ipvs-netlink.sh
#
# After a "## <command>" line, each IPVS message is printed as
#   > FLAGS HEX    a request to the kernel
#   < FLAGS HEX    a reply from the kernel
# where HEX is the generic netlink payload (genl header + attributes, i.e. what
# follows the 16-byte nlmsghdr) and FLAGS the nlmsghdr flags as strace names them.
# (nlmon + tcpdump would do too, but strace is simpler to read back.)
set -euo pipefail

if [[ -z "${DIRECTORD_IPVS_VM:-}" ]]; then
    echo "run me inside the IPVS VM: bash tests/vm/ipvs-vm.sh -- bash $0" >&2
    exit 2
fi
work=$(mktemp -d)

capture() {
    echo "## $*"
    if ! strace -o "$work/trace" -e trace=sendmsg,recvmsg -e signal=none -s 65536 -xx "$@" \
        >"$work/out" 2>&1; then
        echo "# (failed: $(head -c 200 "$work/out"))"
    fi
    # One line per syscall; MSG_PEEK reads are libnl looking ahead, skip them.
    { grep -v MSG_PEEK "$work/trace" || true; } | while IFS= read -r line; do
        case "$line" in
            sendmsg*) dir=">" ;;
            recvmsg*) dir="<" ;;
            *) continue ;;
        esac
        { grep -o 'nlmsg_type=IPVS, nlmsg_flags=[^,]*, [^}]*}, "[^"]*"' <<<"$line" || true; } |
            sed -E 's/^nlmsg_type=IPVS, nlmsg_flags=([^,]*),.*"(.*)"$/\1 \2/; s/\\x//g' |
            while read -r flags hex; do echo "$dir $flags $hex"; done
    done
}

capture ipvsadm -A -t 192.0.2.100:80 -s wlc
capture ipvsadm -A -u [2001:db8::100]:53 -s mh -b mh-fallback,mh-port -p 600 -M 64
capture ipvsadm -A --sctp-service 192.0.2.100:3868 -s sh -b sh-port
capture ipvsadm -A -f 7 -s wrr -p 300 -M 255.255.255.0
capture ipvsadm -A -f 8 -6 -s lc
capture ipvsadm -A -u 192.0.2.100:53 -s rr -o
capture ipvsadm -a -t 192.0.2.100:80 -r 10.0.1.11:8080 -m -w 100 -x 1000 -y 10
capture ipvsadm -a -t 192.0.2.100:80 -r 10.0.1.12 -g -w 0
capture ipvsadm -a -t 192.0.2.100:80 -r 10.0.1.13 -i -w 2
capture ipvsadm -a -t 192.0.2.100:80 -r 10.0.1.14 -i --tun-type gue --tun-port 6080 --tun-csum
capture ipvsadm -a -t 192.0.2.100:80 -r 10.0.1.15 -i --tun-type gre --tun-remcsum
capture ipvsadm -a -u [2001:db8::100]:53 -r [2001:db8::21]:53 -m -w 5
capture ipvsadm -e -t 192.0.2.100:80 -r 10.0.1.12 -g -w 7
capture ipvsadm -E -t 192.0.2.100:80 -s rr -p 60
capture ipvsadm -Ln --stats
capture ipvsadm -Ln --exact --stats -t 192.0.2.100:80
capture ipvsadm --set 900 120 300
capture ipvsadm -L --timeout
capture ipvsadm --start-daemon master --mcast-interface lo --syncid 7
capture ipvsadm --start-daemon backup --mcast-interface lo --syncid 9 --mcast-group ff02::81 --mcast-port 8850 --mcast-ttl 2 --sync-maxlen 1400
capture ipvsadm -L --daemon
capture ipvsadm --stop-daemon master
capture ipvsadm -d -t 192.0.2.100:80 -r 10.0.1.13
capture ipvsadm -Z -t 192.0.2.100:80
capture ipvsadm -D -f 7
capture ipvsadm -C
# Counters that are not all zero: UDP datagrams sent from here go through IPVS
# (LOCAL_OUT) to a masqueraded real server that does not exist.
ip link add dummy0 type dummy && ip link set dummy0 up
ip addr add 10.0.0.1/24 dev dummy0
capture ipvsadm -A -u 10.0.0.1:53 -s rr -p 60
capture ipvsadm -a -u 10.0.0.1:53 -r 10.0.0.2:53 -m -w 3
for i in 1 2 3 4 5; do echo "query $i" >/dev/udp/10.0.0.1/53; done
sleep 3
capture ipvsadm -Ln --stats --exact -u 10.0.0.1:53
rm -rf "$work"
