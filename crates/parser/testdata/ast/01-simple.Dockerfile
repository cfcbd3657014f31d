FROM alpine:3.20
RUN apk add --no-cache curl
WORKDIR /app
COPY app.sh /app/
CMD ["/app/app.sh", "--serve"]
