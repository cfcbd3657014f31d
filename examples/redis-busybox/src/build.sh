#!/bin/sh
# The stand-in for redis' `make`: writes out/redis-server, a shell "server" that answers
# --version and otherwise reports its arguments, plus a data blob the size of real objects.
set -eu
mkdir -p out
{
	echo '#!/bin/sh'
	echo 'case "${1:-}" in'
	echo "	--version|-v) echo \"Redis server v=${REDIS_VERSION:-unknown} (strata example stand-in)\" ;;"
	echo '	*) echo "redis-server stand-in: $*"; exec sleep 2147483647 ;;'
	echo 'esac'
} > out/redis-server
# Object files a real build leaves behind in the source tree (deleted with it).
head -c 400000 /dev/urandom > out/server.o
