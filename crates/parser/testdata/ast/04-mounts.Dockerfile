FROM golang:1.22 AS build
ARG CACHE_ID=go
RUN --mount=type=cache,target=/root/.cache/go-build,id=${CACHE_ID}-build,sharing=locked \
    --mount=type=bind,target=.,rw \
    go build ./...
RUN --mount=type=secret,id=npmrc,target=/root/.npmrc,required \
    --mount=type=ssh \
    --network=none \
    npm ci
RUN --mount=type=tmpfs,target=/scratch,size=64m --security=insecure ls /scratch
RUN --mount=type=cache,target=/var/cache/apt,mode=0755,uid=0,gid=0 --network=host apt-get update && apt-get install -y git
