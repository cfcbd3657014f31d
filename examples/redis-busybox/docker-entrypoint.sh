#!/bin/sh
# Entry point of the example: flags alone mean "redis-server with these flags"; a server
# started as root moves its data folder to the redis user first.
set -e
case "${1:-}" in
	-*) set -- redis-server "$@" ;;
esac
if [ "$1" = "redis-server" ] && [ "$(id -u)" = "0" ]; then
	find . \! -user redis -exec chown redis '{}' + 2>/dev/null || true
fi
exec "$@"
