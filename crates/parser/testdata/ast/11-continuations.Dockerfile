FROM debian
# a comment before the instruction
RUN apt-get update \
# a comment inside the continuation
    && apt-get install -y \

        ca-certificates \  
    && rm -rf /var/lib/apt/lists/*
RUN echo one \\
RUN echo "two"\

