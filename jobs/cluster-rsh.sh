#!/bin/sh
# Open MPI's rsh agent on the emulated cluster (jobs/cluster.sh): "log in" to host $1 by
# entering its network namespace (of the same name) and a fresh UTS namespace carrying that
# hostname, then run the rest of the arguments as a remote shell would.
#   cluster-rsh.sh [ssh-style options] HOST COMMAND...
while [ "${1#-}" != "$1" ]; do shift; done
host=$1
shift
exec ip netns exec "$host" unshare --uts sh -c 'hostname "$0" && exec sh -c "$*"' "$host" "$@"
