# syntax=docker/dockerfile:1.7
ARG GO_VERSION=1.22
ARG BASE=debian:bookworm-slim

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS Build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS TARGETARCH
RUN GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /out/app ./cmd/app

FROM build AS test
RUN go test ./...

FROM ${BASE}
COPY --from=build --chown=app:app /out/app /usr/local/bin/app
USER app
ENTRYPOINT ["app"]
