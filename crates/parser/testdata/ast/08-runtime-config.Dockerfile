FROM ubuntu:24.04
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
EXPOSE 80 443/tcp 53/udp 7000-7010/udp 9090/sctp
USER www-data:www-data
VOLUME ["/data", "/logs"]
VOLUME /cache /tmp/work
WORKDIR /srv
WORKDIR releases
STOPSIGNAL SIGQUIT
MAINTAINER Someone <someone@example.com>
ENTRYPOINT exec /usr/sbin/nginx -g "daemon off;"
