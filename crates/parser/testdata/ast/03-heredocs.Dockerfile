FROM debian:bookworm
ENV GREETING=hello
RUN <<EOF
set -e
echo "$GREETING from a heredoc"
EOF
RUN <<-'SCRIPT' bash
	echo 'quoted terminator: $GREETING stays'
	SCRIPT
COPY <<conf.ini <<-notes.txt /etc/app/
[main]
name=$GREETING
conf.ini
	tabbed line
	notes.txt
RUN 3<<DATA cat /dev/fd/3
payload
DATA
RUN cat <<A && cat <<"B"
first
A
second
B
