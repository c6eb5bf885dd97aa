#!/usr/bin/env bash
# The two-node launcher test (launcher_test.sh) with node 1 in its own network namespace,
# joined to the host by a veth pair: node 0 at 10.a.b.1, node 1 at 10.a.b.2, nothing shared
# but that link (each side has its own loopback). Needs root and `ip netns`; exits 77
# (skipped, with the reason) where the machine does not allow them.
set -euo pipefail
FTRUN=$(realpath "$1")
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "network namespaces need root"
command -v ip > /dev/null || skip "no ip command (Debian package iproute2)"
NS=ftrun_ns_$$
VH=ftva$$
VN=ftvb$$
SUB=10.$((RANDOM % 200 + 20)).$((RANDOM % 250)).
cleanup() {
  ip netns pids "$NS" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  ip link del "$VH" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$NS" 2>/dev/null || skip "ip netns add is not allowed here"
ip link add "$VH" type veth peer name "$VN" 2>/dev/null || skip "cannot create a veth pair here"
ip link set "$VN" netns "$NS"
ip addr add "${SUB}1/24" dev "$VH"
ip link set "$VH" up
ip netns exec "$NS" ip addr add "${SUB}2/24" dev "$VN"
ip netns exec "$NS" ip link set "$VN" up
ip netns exec "$NS" ip link set lo up
# The link must carry TCP before the real test means anything.
python3 -c "import socket,sys; s=socket.socket(); s.bind(('${SUB}1',0)); s.listen(); print(s.getsockname()[1]); sys.stdout.flush(); s.accept()" > /tmp/ftrun_netns_port.$$ &
sleep 0.5
ip netns exec "$NS" python3 -c "import socket; socket.create_connection(('${SUB}1', int(open('/tmp/ftrun_netns_port.$$').read())), timeout=5)" \
  || { rm -f /tmp/ftrun_netns_port.$$; echo "FAIL: no TCP across the veth pair" >&2; exit 1; }
rm -f /tmp/ftrun_netns_port.$$
# Node 1's processes see only the namespace's interfaces; node 0 is dialled at ${SUB}1.
MASTER="${SUB}1" bash "$(dirname "$0")/launcher_test.sh" "$FTRUN" ip netns exec "$NS"
echo "e2e netns: passed (node 1 in network namespace $NS)"
