ARG VERSION=1.0 REVISION
FROM busybox:${VERSION}
ARG VERSION
ARG USER_NAME="app user" EMPTY= PLAIN
ENV APP_HOME=/opt/app \
    APP_VERSION=$VERSION
ENV LEGACY_FORM value with spaces
ENV QUOTED="a \"quoted\" value" SINGLE='no $expansion'
LABEL org.opencontainers.image.title="Demo app" \
      org.opencontainers.image.version=$VERSION
LABEL maintainer someone@example.com
