from alpine as base
run ["echo", "exec form"]
cmd [ 'single quotes are not JSON' ]
entrypoint ["unterminated
copy ["missing-bracket", "/x"
run echo "[\"json\", \"inside a string\"]"
