FROM alpine AS src
FROM alpine
COPY --from=src --chown=1000:1000 --chmod=0644 --link /etc/os-release /tmp/
COPY --parents --exclude=*.md --exclude=docs/ ./pkg/./**/*.go /src/
COPY ["file with spaces.txt", "/dest dir/"]
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.com/tool.tar.gz /opt/
ADD --keep-git-dir=true https://github.com/example/repo.git#v1.2.3 /src/repo
ADD --unpack=false --chmod=755 archive.tar.gz /opt/archive/
COPY -- --not-a-flag /tmp/
