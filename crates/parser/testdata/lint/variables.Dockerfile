ARG TAG
ARG VERSION=3.20
ARG REGISTRY_TOKEN=abc
FROM alpine:${TAG} AS base
FROM --platform=$TARGETPLATFORM alpine:${VERSON} AS dup-platform
FROM --platform=linux/amd64 alpine AS fixed
ENV DB_PASSWORD=hunter2
WORKDIR app
COPY $SRC_DIR/config /etc/app/
ARG SRC_DIR=src
COPY $SRC_DIR/config /etc/app/
RUN echo "$RUNTIME_ONLY is fine: the shell expands it"
FROM fixed
WORKDIR /abs
WORKDIR relative-is-fine-now
LABEL version=$REGISTRY_TOKEN
