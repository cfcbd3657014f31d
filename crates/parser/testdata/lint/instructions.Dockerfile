FROM debian:bookworm
MAINTAINER someone@example.com
ENV LEGACY value
LABEL legacy value
EXPOSE 80/TCP 127.0.0.1:8080:80
RUN apt-get update
RUN apt-get install -y curl
RUN echo one
RUN echo two
RUN --mount=type=cache,target=/c echo three
# strata:ignore ConsecutiveRunInstructions
RUN echo four
RUN echo five \

    && echo six
CMD echo first
CMD ["echo", "second"]
ENTRYPOINT /entry.sh
HEALTHCHECK CMD true
HEALTHCHECK NONE
FROM debian:bookworm AS with-shell
SHELL ["/bin/bash", "-c"]
CMD echo shell form is fine after SHELL
