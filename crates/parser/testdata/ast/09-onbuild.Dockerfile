FROM node:20
ONBUILD COPY package.json /app/
ONBUILD RUN --mount=type=cache,target=/root/.npm npm install
ONBUILD RUN <<EOF
echo "triggered"
EOF
ONBUILD BOGUS not checked until a downstream build runs it
