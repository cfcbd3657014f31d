# syntax=docker/dockerfile:1
ARG BASE=alpine:3.20
FROM ${BASE} AS build
ARG BASE
WORKDIR /src
COPY . .
RUN apk add --no-cache make && make
FROM scratch
COPY --from=build /src/out /app
ENTRYPOINT ["/app"]
